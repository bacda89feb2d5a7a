"""The adapter contract: what every architecture exposes to the diagnostics.

One small interface with optional capabilities (captum's lesson): an adapter
implements ``score``; ``mask`` and ``trace`` only where the architecture
supports them, and ``capabilities`` says which.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image


class WeightsUnavailable(Exception):
    """The model cannot be loaded here; the task becomes *Blocked*, never retried.

    ``searched`` lists the exact places weights were looked for, ``mitigation``
    says how to provide them, ``fetch`` is the download command alone (the
    handoff lists those commands once, in a shared block).
    """

    def __init__(self, model: str, reason: str, searched: list[str], mitigation: str, fetch: str = ""):
        self.model, self.reason, self.searched, self.mitigation = model, reason, searched, mitigation
        self.fetch = fetch  # the one command that fetches the weights on a connected machine, where there is one
        where = "; ".join(searched) if searched else "(nowhere)"
        super().__init__(f"{model}: {reason}. Looked in: {where}. Fix: {mitigation}")


@dataclass(frozen=True)
class ModelSpec:
    """Which model to open: an adapter name plus its source."""

    name: str                      # label used in reports, e.g. "openclip-vit-b-32"
    adapter: str                   # registry key, e.g. "zoo", "openclip"
    source: str                    # hub id / pretrained tag / local path / zoo variant
    arch: str | None = None        # architecture name where the adapter needs one (open_clip model name)
    revision: str | None = None
    allow_random_init: bool = False
    # Config overrides applied only when the real class is built with random
    # weights (--allow-random-init), e.g. (("num_hidden_layers", 2),): keeps a
    # CPU run of a 7B architecture small. Hashable so specs stay cache keys.
    random_init_config: tuple[tuple[str, object], ...] = ()
    # The mission's opt-in to run code shipped with the weights (trust_remote_code); the CLI's
    # --trust-remote-code (env FUSIONAUDIT_TRUST_REMOTE_CODE=1) must be given too (docs/security.md).
    trust_remote_code: bool = False
    # Where and in which precision to run (the mission's runtime section / cycle run --device --dtype):
    # device None or "auto": a GPU when there is one (transformers models then load with
    # device_map="auto", spreading a model larger than one GPU over all of them), else the CPU;
    # dtype None or "auto": float32 on the CPU, the checkpoint's own precision elsewhere.
    device: str | None = None
    dtype: str | None = None

    @property
    def random_config(self) -> dict:
        return dict(self.random_init_config)


@dataclass(frozen=True)
class Smoke:
    """A tiny model of an adapter's architecture that builds in seconds on a CPU (the adapter's ``smoke``).

    The registry-wide contract test (tests/unit/tasks/adapters/test_contract.py) opens every
    adapter's smoke model and checks load, score, mask and, where declared, trace; an adapter's
    own tests then need to cover only its specifics.
    """

    random_init_config: tuple[tuple[str, object], ...] = ()  # config overrides of the real class (see ModelSpec)
    source: str = ""               # "" builds the real class with random weights
    arch: str | None = None
    hub_id: str | None = None      # a real hub id of the architecture: offline and not cached, loading it is Blocked
    weights: bool = True           # False: nothing to download (the zoo trains in-process), so nothing is Blocked
    loads: bool = True             # False: random weights cannot stand in, the contract checks only the Blocked path
    setup: Callable[[], None] | None = None  # makes the spec loadable first (e.g. registers a tiny open_clip config)

    def spec(self, adapter: str, source: str | None = None, allow_random_init: bool = True) -> ModelSpec:
        if self.setup is not None:
            self.setup()
        return ModelSpec(name=f"smoke-{adapter}", adapter=adapter, source=self.source if source is None else source,
                         arch=self.arch, allow_random_init=allow_random_init,
                         random_init_config=self.random_init_config)


@dataclass(frozen=True)
class TokenSpans:
    """Where each modality sits in the sequence the fusion layers see."""

    image: tuple[int, int]         # [start, stop) positions of image tokens
    text: tuple[int, int]          # [start, stop) positions of text tokens
    special: tuple[int, ...] = ()  # CLS / EOS / query positions


@dataclass
class AttentionSummary:
    """Per-sample, per-layer attention statistics reduced inside the hooks.

    All tensors are ``[batch, layers]``. ``visual_share`` is NaN for layers
    without cross-modal attention (a dual encoder's towers).
    """

    layer_names: list[str]
    visual_share: torch.Tensor     # attention mass from text/query rows onto image columns / row mass
    text_share: torch.Tensor       # same rows onto text columns
    entropy_visual: torch.Tensor   # mean normalised entropy of rows whose query is an image token
    entropy_text: torch.Tensor     # mean normalised entropy of rows whose query is a text token
    n_image_tokens: int
    n_text_tokens: int
    spans: TokenSpans | None = None
    # The third bucket and the sink-aware share (tasks.diagnostics.attention.reduce_attention), [batch, layers]:
    # mass on special tokens (CLS/BOS/EOS, registers), mass on the top-k sink keys, image share without the sinks.
    other_share: torch.Tensor | None = None
    sink_mass: torch.Tensor | None = None
    visual_share_sink_aware: torch.Tensor | None = None
    # Other per-layer statistics an architecture has, [batch, layers] each,
    # e.g. {"gate": tanh(alpha)} for Flamingo-style gated cross-attention.
    # Capability "rollout": extras["rollout_visual_share"] holds attention
    # rollout (tasks.diagnostics.rollout.Rollout, accumulated inside the same
    # hooks) read after each layer; the last column is the model's value.
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    # [batch] text tokens of each sample (padding excluded) where captions
    # differ in length; n_text_tokens is then the batch's longest. The
    # per-token attention efficiency divides by these.
    n_text_per_sample: torch.Tensor | None = None
    # Capability "maps": trace(inputs, keep_maps=k) fills this with the
    # head-mean attention map of the first k samples per layer
    # (layer name -> [k, Q, K]), for plots only; empty otherwise.
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    # [batch] the model's score from the traced forward, where that forward is the scored one (the
    # diagnostics then need no separate plain pass); None where the trace covers only part of the model.
    score: torch.Tensor | None = None
    # Capability "separable": the traced towers' embeddings (image [B, D], text [B, D]) as encode_image /
    # encode_text give them, so the Shapley passes reuse them instead of running the towers again.
    embeddings: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class Players:
    """MM-SHAP players of one batch (capability ``mask_tokens``).

    Text players are the caption's tokens (never CLS/EOS/padding/prompt);
    image players are the cells of a square grid over the image whose side
    the metric chooses (MM-SHAP sizes it to match the number of text tokens).
    """

    text_valid: torch.Tensor       # [B, T] bool: which text positions are players


@dataclass
class Inputs:
    """Model-ready tensors for one batch; opaque to the diagnostics."""

    tensors: dict[str, torch.Tensor]
    sample_ids: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sample_ids)


@runtime_checkable
class LoadedModel(Protocol):
    """A model opened by an adapter. ``capabilities`` ⊆ {"score", "mask", "trace", "mask_tokens",
    "separable", "rollout", "relevance", "maps"}; the optional ones are documented below."""

    spec: ModelSpec
    family: str                    # e.g. "single-stream fusion", "dual encoder"
    capabilities: frozenset[str]
    random_init: bool              # True when weights are random (--allow-random-init)
    revision: str                  # weights identity for caching (hash / tag)

    def prepare(self, images: list[Image.Image], captions: list[str], sample_ids: list[str]) -> Inputs: ...

    def score(self, inputs: Inputs) -> torch.Tensor:
        """A scalar per (image, text) pair, shape [batch]."""

    def mask(self, inputs: Inputs, image_keep: bool, text_keep: bool) -> Inputs:
        """The inputs with a whole modality replaced by its baseline where keep is False."""

    # Optional capability "trace" (attention statistics reduced inside the hooks; DESIGN.md: an adapter
    # never stubs a method it cannot support, so the protocol does not require it):
    #   trace(inputs) -> AttentionSummary

    # Optional capability "mask_tokens" (MM-SHAP):
    #   players(inputs) -> Players
    #   mask_tokens(inputs, image_keep: bool [B, g, g], text_keep: bool [B, T]) -> Inputs
    #     image cells not kept -> the normalised mean (zero after normalisation)
    #     text players not kept -> the tokenizer's mask/pad id
    #     B is len(inputs); MM-SHAP builds inputs with one row per coalition by
    #     calling prepare() on repeated images/captions, so adapters need no
    #     row-indexing of their own tensors. g is the caller's choice (any
    #     g >= 1); tasks.diagnostics.masking.pixel_keep(image_keep, H, W) maps
    #     the grid onto pixels the same way for every adapter.
    # Optional capability "separable" (dual encoders: CLIP, ALIGN):
    #   encode_image(inputs, image_keep: bool [B, g, g] | None) -> [B, D]
    #   encode_text(inputs, text_keep: bool [B, T] | None) -> [B, D]
    #   similarity(image_emb [B, D], text_emb [B, D]) -> [B]  (== score when nothing is masked)
    #     masking inside encode_* is exactly mask_tokens' masking, so
    #     similarity(encode_image(x, i), encode_text(x, t)) == score(mask_tokens(x, i, t)).
    #     encode_* run their tower once per distinct row (tasks.adapters.towers): a whole-modality
    #     baseline, the same in every row, costs one row of the tower per call.
    # Optional capability "rollout": trace() also fills
    #   AttentionSummary.extras["rollout_visual_share"] [B, layers] (see there).
    # Optional capability "relevance" (gradients flow through the attention):
    #   relevance(inputs) -> [B] image share of Chefer et al. (2021) relevance
    #     of the scored position, computed with tasks.diagnostics.relevance.
    # Optional capability "maps": trace(inputs, keep_maps: int = 0) (see AttentionSummary.maps).


class Adapter(Protocol):
    """Opens models of one architecture family."""

    name: str
    family: str                    # e.g. "dual encoder", "single-stream fusion", "LLM with image tokens"
    capabilities: frozenset[str]   # what its models support, known without loading them
    smoke: Smoke                   # its tiny model, opened by the registry-wide contract test

    def load(self, spec: ModelSpec) -> LoadedModel:
        """Raises WeightsUnavailable when the weights are not on this machine."""

    def locate(self, spec: ModelSpec) -> tuple[bool, list[str]]:
        """(weights present on this machine, the places looked) — without loading; for ``models list``."""
