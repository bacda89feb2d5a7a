"""The calibration zoo: tiny fusion transformers with planted modality use.

Three single-stream models ([CLS] + image patches + caption words, two
layers of hand-written attention) are trained here, in seconds on a CPU, on
the synthetic shapes data:

- ``text_dominant``: target = the caption names a warm colour; the caption
  is paired with an unrelated image, so the image carries no signal.
- ``balanced``: target = the caption matches the image; neither modality
  alone says anything.
- ``vision_dominant``: target = the image shows a warm colour; the caption
  belongs to another image.

They are the ground truth for the metrics: a metric that does not put
``text_dominant`` near 0 and ``vision_dominant`` near 1 is broken. Training
sees masked patches/words and whole-modality dropout (so masked inputs are
in distribution for ablation and Shapley) with label smoothing (so logits
stay finite), and each model's held-out accuracy with and without each
modality is checked before it is used — training can stall silently.

Beyond ``score``/``mask``/``trace`` the zoo supports every metric: MM-SHAP
players (``mask_tokens``: words → [MASK], grid cells → the pixel mean),
attention rollout accumulated inside the trace hooks (``rollout``), Chefer
relevance from the attention gradients (``relevance``) and attention maps
of a few samples for plots (``maps``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from PIL import Image
from torch import nn

from tasks.adapters.contract import AttentionSummary, Inputs, ModelSpec, Players, Smoke, TokenSpans
from tasks.data.synthetic import Sample, make_synthetic
from tasks.data.vocabulary import MASK_ID, PAD_ID, VOCAB, tokenize
from tasks.diagnostics.attention import reduce_attention
from tasks.diagnostics.masking import pixel_keep
from tasks.diagnostics.relevance import RelevanceRow
from tasks.diagnostics.rollout import Rollout, row_share
from tasks.runtime.paths import cache_dir

ZOO_VERSION = "1"  # bump when the architecture, data or training changes meaning
VARIANTS = ("text_dominant", "balanced", "vision_dominant")
WARM = frozenset({"red", "yellow"})


class ZooTrainingError(RuntimeError):
    """A zoo model trained without its planted behaviour; its metrics would lie."""


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    data_seed: int = 1000          # held-out data uses data_seed + 1
    n_train: int = 2048
    n_heldout: int = 512
    image_size: int = 32
    patch: int = 8
    max_len: int = 8
    dim: int = 32
    heads: int = 4
    layers: int = 2
    steps: int = 800
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    max_mask_rate: float = 0.5     # per-sample masking rate ~ U(0, max) per modality
    modality_dropout: float = 0.15  # chance of dropping a whole modality, per modality


DEFAULT_CONFIG = TrainConfig()
SEEDS = (0, 1, 2)  # the training seeds calibration runs over; seed 0 is DEFAULT_CONFIG


def seeded_config(seed: int, config: TrainConfig = DEFAULT_CONFIG) -> TrainConfig:
    """``config`` with another training seed (init, batches, masking); the data and check sets stay the same.

    Seed 0 of the default config is DEFAULT_CONFIG itself, so its cache key and trained models do not change.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"zoo training seed {seed!r}: use a non-negative int (calibration uses {SEEDS})")
    return replace(config, seed=seed)


# --- the network ------------------------------------------------------------

class EagerAttention(nn.Module):
    """Multi-head self-attention computed by hand so ``attn_probs`` can be hooked."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.attn_probs = nn.Identity()  # hook point: [B, H, S, S], rows sum to 1

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
        probs = self.attn_probs(scores.softmax(dim=-1))
        return self.out((probs @ v).transpose(1, 2).reshape(b, s, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = EagerAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_padding)
        return x + self.mlp(self.norm2(x))


class FusionTransformer(nn.Module):
    """[CLS] + image patches + text tokens → one logit read from [CLS]."""

    def __init__(self, config: TrainConfig):
        super().__init__()
        d = config.dim
        self.n_patches = (config.image_size // config.patch) ** 2
        seq = 1 + self.n_patches + config.max_len
        self.patch_embed = nn.Linear(3 * config.patch**2, d)
        self.token_embed = nn.Embedding(len(VOCAB), d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, seq, d) * 0.02)
        self.modality = nn.Embedding(3, d)  # 0 special, 1 image, 2 text
        modality_ids = torch.tensor([0] + [1] * self.n_patches + [2] * config.max_len)
        self.register_buffer("modality_ids", modality_ids, persistent=False)
        # Pixel normalisation from the training images: the baseline image is all zeros.
        self.register_buffer("pixel_mean", torch.zeros(3))
        self.register_buffer("pixel_std", torch.ones(3))
        self.layers = nn.ModuleList(Block(d, config.heads) for _ in range(config.layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)

    def forward(self, patches: torch.Tensor, token_ids: torch.Tensor, text_padding: torch.Tensor) -> torch.Tensor:
        b = patches.shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1), self.patch_embed(patches), self.token_embed(token_ids)], dim=1)
        x = x + self.pos + self.modality(self.modality_ids)
        key_padding = torch.cat([torch.zeros(b, 1 + self.n_patches, dtype=torch.bool), text_padding], dim=1)
        for layer in self.layers:
            x = layer(x, key_padding)
        return self.head(self.norm(x[:, 0])).squeeze(-1)


# --- inputs -------------------------------------------------------------------

def _patchify(images: list[Image.Image], size: int, patch: int) -> torch.Tensor:
    """[B, n_patches, 3·patch²] raw pixels in [0, 1], row-major patches."""
    arrays = [np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32) / 255.0 for im in images]
    x = torch.from_numpy(np.stack(arrays))  # [B, H, W, 3]
    g = size // patch
    x = x.view(len(images), g, patch, g, patch, 3).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(len(images), g * g, patch * patch * 3)


def _encode(captions: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([tokenize(c, max_len) for c in captions], dtype=torch.long).view(len(captions), max_len)
    return ids, ids == PAD_ID


def _normalise(raw: torch.Tensor, net: FusionTransformer) -> torch.Tensor:
    mean, std = net.pixel_mean.repeat(raw.shape[-1] // 3), net.pixel_std.repeat(raw.shape[-1] // 3)
    return (raw - mean) / std


def _masked(patches, ids, text_padding, image_drop: torch.Tensor, text_drop: torch.Tensor):
    """Patches → baseline (0) where image_drop [B, N]; words → [MASK] where text_drop [B, L]."""
    patches = patches.masked_fill(image_drop[..., None], 0.0)
    ids = ids.masked_fill(text_drop & ~text_padding, MASK_ID)
    return patches, ids


# --- training -----------------------------------------------------------------

class _Pool:
    """A synthetic set as tensors, plus the per-sample facts the targets use."""

    def __init__(self, samples: list[Sample], config: TrainConfig):
        self.raw = _patchify([s.image for s in samples], config.image_size, config.patch)
        self.ids, self.padding = _encode([s.caption for s in samples], config.max_len)
        self.image_warm = torch.tensor([s.attributes["colour"] in WARM for s in samples], dtype=torch.float32)
        said = [s.caption_attributes["colour"] in WARM for s in samples]
        self.caption_warm = torch.tensor(said, dtype=torch.float32)
        self.matches = torch.tensor([s.matches for s in samples], dtype=torch.float32)

    def pairs(self, variant: str, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and caption indices. Single-modality variants draw them apart, so
        the unused modality says nothing about the target — not even through
        memorising which training image carried which label."""
        images = torch.randint(0, len(self.raw), (size,), generator=gen)
        if variant == "balanced":
            return images, images
        return images, torch.randint(0, len(self.raw), (size,), generator=gen)

    def target(self, variant: str, images: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        if variant == "text_dominant":
            return self.caption_warm[captions]
        if variant == "vision_dominant":
            return self.image_warm[images]
        return self.matches[images]


def _augment(patches, ids, padding, config: TrainConfig, gen: torch.Generator):
    """Independent per-modality masking rates plus occasional whole-modality dropout."""
    b = patches.shape[0]

    def drop(shape):
        rate = torch.rand(b, 1, generator=gen) * config.max_mask_rate
        whole = torch.rand(b, 1, generator=gen) < config.modality_dropout
        return (torch.rand(*shape, generator=gen) < rate) | whole

    return _masked(patches, ids, padding, drop(patches.shape[:2]), drop(ids.shape))


@contextmanager
def _one_thread():
    # Ops this small gain nothing from intra-op threads, and on a busy machine
    # two spinning OpenMP threads made training ~50x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(variant: str, config: TrainConfig = DEFAULT_CONFIG) -> tuple[FusionTransformer, dict]:
    """Train one zoo model and check its planted behaviour; returns (net, report)."""
    with _one_thread():
        net, report = _fit(variant, config)
    check_planted(variant, report)
    return net, report


def _fit(variant: str, config: TrainConfig) -> tuple[FusionTransformer, dict]:
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    pool = _Pool(make_synthetic(config.n_train, config.data_seed, config.image_size), config)
    net = FusionTransformer(config)
    pixels = pool.raw.reshape(-1, 3)
    net.pixel_mean.copy_(pixels.mean(0))
    net.pixel_std.copy_(pixels.std(0).clamp_min(1e-3))
    patches = _normalise(pool.raw, net)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=config.steps)
    net.train()
    for _ in range(config.steps):
        img, cap = pool.pairs(variant, config.batch_size, gen)
        p, t = _augment(patches[img], pool.ids[cap], pool.padding[cap], config, gen)
        target = pool.target(variant, img, cap) * (1 - config.label_smoothing) + config.label_smoothing / 2
        loss = nn.functional.binary_cross_entropy_with_logits(net(p, t, pool.padding[cap]), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    net.eval()
    report = held_out_accuracy(net, variant, config)
    report["train_seconds"] = round(time.perf_counter() - start, 2)
    return net, report


@torch.no_grad()
def held_out_accuracy(net: FusionTransformer, variant: str, config: TrainConfig) -> dict:
    """Accuracy on fresh samples with both modalities, image only and text only."""
    pool = _Pool(make_synthetic(config.n_heldout, config.data_seed + 1, config.image_size), config)
    img, cap = pool.pairs(variant, config.n_heldout, torch.Generator().manual_seed(config.seed + 1))
    patches, ids, padding = _normalise(pool.raw, net)[img], pool.ids[cap], pool.padding[cap]
    target = pool.target(variant, img, cap)
    all_image = torch.ones(patches.shape[:2], dtype=torch.bool)
    all_text = torch.ones(ids.shape, dtype=torch.bool)
    views = {
        "full": _masked(patches, ids, padding, ~all_image, ~all_text),
        "image_only": _masked(patches, ids, padding, ~all_image, all_text),
        "text_only": _masked(patches, ids, padding, all_image, ~all_text),
    }
    report = {
        name: round(((net(p, t, padding) > 0).float() == target).float().mean().item(), 4)
        for name, (p, t) in views.items()
    }
    report["majority"] = round(max(target.mean().item(), 1 - target.mean().item()), 4)  # a constant's accuracy
    return report


def check_planted(variant: str, acc: dict) -> None:
    """Raise ZooTrainingError unless the held-out accuracies show the planted behaviour."""
    full, image, text = acc["full"], acc["image_only"], acc["text_only"]
    chance = acc["majority"] + 0.08  # a modality without signal can do no better than a constant
    # The balanced model learns the colour check within budget (same-colour
    # mismatches, ~12 % of pairs, stay hard), so it tops out near 0.88.
    least = 0.8 if variant == "balanced" else 0.9
    problems = []
    if full < least:
        problems.append(f"full accuracy {full:.3f} < {least:.2f}")
    if variant == "text_dominant" and (text < full - 0.05 or image > chance):
        problems.append(f"want text-only ≈ full, image-only ≈ chance; got text {text:.3f}, image {image:.3f}")
    if variant == "vision_dominant" and (image < full - 0.05 or text > chance):
        problems.append(f"want image-only ≈ full, text-only ≈ chance; got image {image:.3f}, text {text:.3f}")
    if variant == "balanced" and full < max(image, text) + 0.25:
        problems.append(f"full {full:.3f} not clearly above image-only {image:.3f} / text-only {text:.3f}")
    if problems:
        raise ZooTrainingError(
            f"zoo model {variant!r} did not learn its planted behaviour ({'; '.join(problems)}); "
            "try another TrainConfig.seed or more steps"
        )


# --- caching and the adapter -------------------------------------------------

def cache_key(variant: str, config: TrainConfig = DEFAULT_CONFIG) -> str:
    blob = json.dumps({"variant": variant, "config": asdict(config), "zoo_version": ZOO_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_zoo_model(variant: str, config: TrainConfig = DEFAULT_CONFIG, spec: ModelSpec | None = None,
                   seed: int | None = None) -> ZooModel:
    """The trained model for ``variant``: from the cache, else trained and cached.

    ``seed`` (optional) replaces ``config.seed``: the same variant trained from another initialisation.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown zoo variant {variant!r}; valid: {', '.join(VARIANTS)}")
    if seed is not None:
        config = seeded_config(seed, config)
    key = cache_key(variant, config)
    path = cache_dir("zoo") / f"{variant}-{key}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        net = FusionTransformer(config)
        net.load_state_dict(saved["state_dict"])
        report, from_cache = saved["report"], True
    else:
        net, report = train(variant, config)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"state_dict": net.state_dict(), "report": report, "config": asdict(config)}, tmp)
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written model
        from_cache = False
    net.eval()
    spec = spec or ModelSpec(name=f"zoo-{variant}", adapter="zoo", source=variant)
    return ZooModel(spec, net, config, key, report, from_cache)


class ZooModel:
    """A trained zoo network behind the LoadedModel contract."""

    family = "single-stream fusion (calibration zoo)"
    capabilities = frozenset({"score", "mask", "trace", "mask_tokens", "rollout", "relevance", "maps"})
    random_init = False

    def __init__(self, spec: ModelSpec, net: FusionTransformer, config: TrainConfig,
                 revision: str, report: dict, from_cache: bool):
        self.spec, self.net, self.config, self.revision = spec, net, config, revision
        self.held_out_accuracy = report
        self.from_cache = from_cache  # False when this load trained the model

    @property
    def spans(self) -> TokenSpans:
        n = self.net.n_patches
        return TokenSpans(image=(1, 1 + n), text=(1 + n, 1 + n + self.config.max_len), special=(0,))

    def prepare(self, images: list[Image.Image], captions: list[str], sample_ids: list[str]) -> Inputs:
        raw = _patchify(images, self.config.image_size, self.config.patch)
        ids, padding = _encode(captions, self.config.max_len)
        tensors = {"patches": _normalise(raw, self.net), "token_ids": ids, "text_padding": padding}
        return Inputs(tensors=tensors, sample_ids=list(sample_ids))

    @torch.no_grad()
    def score(self, inputs: Inputs) -> torch.Tensor:
        t = inputs.tensors
        return self.net(t["patches"], t["token_ids"], t["text_padding"])

    def mask(self, inputs: Inputs, image_keep: bool, text_keep: bool) -> Inputs:
        t = inputs.tensors
        image_drop = torch.full(t["patches"].shape[:2], not image_keep)
        text_drop = torch.full(t["token_ids"].shape, not text_keep)
        patches, ids = _masked(t["patches"], t["token_ids"], t["text_padding"], image_drop, text_drop)
        tensors = {"patches": patches, "token_ids": ids, "text_padding": t["text_padding"].clone()}
        return Inputs(tensors=tensors, sample_ids=list(inputs.sample_ids), meta=dict(inputs.meta))

    def players(self, inputs: Inputs) -> Players:
        """Text players: the caption's words (the zoo has no text specials; [CLS] is its own position)."""
        return Players(text_valid=~inputs.tensors["text_padding"])

    def mask_tokens(self, inputs: Inputs, image_keep: torch.Tensor, text_keep: torch.Tensor) -> Inputs:
        """Image cells not kept → 0 (the training-pixel mean after normalisation); words not kept → [MASK].

        The same baselines as ``mask`` and as training's masking, so masked
        inputs are in distribution. A cell may cut through a patch: only its pixels change.
        """
        t = inputs.tensors
        b, size, patch = len(inputs), self.config.image_size, self.config.patch
        if image_keep.shape[0] != b or image_keep.dim() != 3 or tuple(text_keep.shape) != tuple(t["token_ids"].shape):
            raise ValueError(f"mask_tokens: image_keep must be [{b}, g, g] and text_keep {tuple(t['token_ids'].shape)}, "
                             f"got {tuple(image_keep.shape)} and {tuple(text_keep.shape)}")
        g = size // patch
        keep = pixel_keep(image_keep, size, size).view(b, g, patch, g, patch).permute(0, 1, 3, 2, 4)
        keep = keep.reshape(b, g * g, patch * patch).repeat_interleave(3, dim=-1)  # _patchify's (row, col, rgb) order
        patches = t["patches"].masked_fill(~keep, 0.0)
        ids = t["token_ids"].masked_fill(~text_keep.bool() & ~t["text_padding"], MASK_ID)
        tensors = {"patches": patches, "token_ids": ids, "text_padding": t["text_padding"].clone()}
        return Inputs(tensors=tensors, sample_ids=list(inputs.sample_ids), meta=dict(inputs.meta))

    def _columns(self, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Image columns [N] and text columns [B, N] (padding excluded) of the fused sequence."""
        n, b = self.net.n_patches, len(inputs)
        is_image = torch.tensor([False] + [True] * n + [False] * self.config.max_len)
        is_text = torch.cat([torch.zeros(b, 1 + n, dtype=torch.bool), ~inputs.tensors["text_padding"]], dim=1)
        return is_image, is_text

    @torch.no_grad()
    def trace(self, inputs: Inputs, keep_maps: int = 0) -> AttentionSummary:
        """Per-layer attention summaries and rollout, reduced inside forward hooks on ``attn_probs``."""
        t = inputs.tensors
        n = self.net.n_patches
        is_image, is_text = self._columns(inputs)
        query_rows = is_text.clone()
        query_rows[:, 0] = True  # [CLS] reads out the score, so its allocation counts
        summaries: list[dict[str, torch.Tensor]] = []
        rollout, rollout_share = Rollout(), []
        maps: dict[str, torch.Tensor] = {}

        def hook(_module, _args, probs):
            summaries.append(reduce_attention(probs, query_rows, is_image, is_text, is_image, is_text))
            rollout.update(probs)
            rollout_share.append(rollout.share(0, is_image, is_text))  # the [CLS] row
            if keep_maps:
                maps[f"layer{len(summaries) - 1}"] = probs[:keep_maps].mean(1).clone()

        handles = [layer.attn.attn_probs.register_forward_hook(hook) for layer in self.net.layers]
        try:
            score = self.net(t["patches"], t["token_ids"], t["text_padding"])  # the hooks only read: same score
        finally:
            for h in handles:
                h.remove()
        stack = {k: torch.stack([s[k] for s in summaries], dim=1) for k in summaries[0]}
        text_counts = is_text.sum(1)
        return AttentionSummary(
            layer_names=[f"layer{i}" for i in range(len(summaries))],
            **stack,
            n_image_tokens=n,
            n_text_tokens=int(text_counts.max()),  # the longest caption, padding excluded
            spans=self.spans,
            extras={"rollout_visual_share": torch.stack(rollout_share, dim=1)},
            n_text_per_sample=text_counts,
            maps=maps,
            score=score,
        )

    def relevance(self, inputs: Inputs) -> torch.Tensor:
        """[B] image share of the [CLS] row of Chefer et al.'s relevance, explaining the predicted class."""
        t = inputs.tensors
        is_image, is_text = self._columns(inputs)
        row = RelevanceRow(torch.zeros(len(inputs), dtype=torch.long), len(self.net.layers))
        seen: list[torch.Tensor] = []

        def hook(_module, _args, probs):
            row.hook(len(seen), probs)
            seen.append(probs)

        handles = [layer.attn.attn_probs.register_forward_hook(hook) for layer in self.net.layers]
        try:
            with torch.enable_grad():
                logit = self.net(t["patches"], t["token_ids"], t["text_padding"])
                # the predicted class's logit: s for class 1, −s for class 0 (one binary logit)
                torch.autograd.grad((logit * logit.detach().sign()).sum(), seen)
        finally:
            for h in handles:
                h.remove()
        if not row.complete:
            raise RuntimeError(f"relevance saw gradients of {len(self.net.layers) - 1 - row.expected} of "
                               f"{len(self.net.layers)} layers")
        return row_share(row.row, is_image, is_text)


class ZooAdapter:
    """Opens calibration-zoo models; ``spec.source`` names the variant.

    A training seed other than 0 comes from ``spec.random_init_config`` as
    ``(("seed", n),)``: the zoo always builds its own weights, so that field
    is where its build options live (a mission can list the seeds as models).
    """

    name = "zoo"
    family = "single-stream fusion (calibration zoo)"
    capabilities = frozenset({"score", "mask", "trace", "mask_tokens", "rollout", "relevance", "maps"})
    smoke = Smoke(source="balanced", weights=False)  # trained in seconds on first use, then cached

    def locate(self, spec: ModelSpec) -> tuple[bool, list[str]]:
        """Zoo weights are trained here, in seconds, on first use: always available; cached under the home folder."""
        return True, [str(cache_dir("zoo"))]

    def load(self, spec: ModelSpec) -> ZooModel:
        options = spec.random_config
        unknown = sorted(set(options) - {"seed"})
        if unknown:
            raise ValueError(f"zoo model {spec.name}: random_init_config keys {unknown} are not zoo options; "
                             "the zoo takes only (('seed', n),)")
        return load_zoo_model(spec.source, spec=spec, seed=options.get("seed"))
