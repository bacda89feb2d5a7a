"""InHouseV2 behind fusionaudit's adapter contract (tasks/adapters/contract.py).

The diagnostics call only ``prepare``, ``score``, ``mask`` and ``trace``;
``locate`` answers ``fusionaudit models list`` without loading anything.
``spec.source`` is the path of a V2 checkpoint (``save_checkpoint`` writes one).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from PIL import Image

from fusionaudit_example_plugin.model import (
    MASK_ID, PAD_ID, InHouseV2, V2Config, build_model, load_checkpoint, patchify, tokenize,
)
from tasks.adapters.contract import AttentionSummary, Inputs, ModelSpec, Smoke, TokenSpans, WeightsUnavailable
from tasks.diagnostics.attention import reduce_attention

CAPABILITIES = frozenset({"score", "mask", "trace"})
FAMILY = "single-stream fusion"


class InHouseV2Model:
    """An opened V2 network (the LoadedModel protocol)."""

    family = FAMILY
    capabilities = CAPABILITIES

    def __init__(self, spec: ModelSpec, net: InHouseV2, revision: str, random_init: bool):
        self.spec, self.net, self.revision, self.random_init = spec, net, revision, random_init
        self.config: V2Config = net.config

    @property
    def spans(self) -> TokenSpans:
        n = self.config.n_patches
        return TokenSpans(image=(1, 1 + n), text=(1 + n, 1 + n + self.config.max_len), special=(0,))

    def prepare(self, images: list[Image.Image], captions: list[str], sample_ids: list[str]) -> Inputs:
        ids = torch.tensor([tokenize(c, self.config) for c in captions], dtype=torch.long)
        tensors = {"patches": patchify(images, self.config), "token_ids": ids.view(len(captions), -1)}
        return Inputs(tensors=tensors, sample_ids=list(sample_ids))

    @torch.no_grad()
    def score(self, inputs: Inputs) -> torch.Tensor:
        return self.net(inputs.tensors["patches"], inputs.tensors["token_ids"])

    def mask(self, inputs: Inputs, image_keep: bool, text_keep: bool) -> Inputs:
        """Baselines: image → all-zero patches (mid-grey); text → [MASK] for every word, padding kept."""
        patches, ids = inputs.tensors["patches"].clone(), inputs.tensors["token_ids"].clone()
        if not image_keep:
            patches.zero_()
        if not text_keep:
            ids[ids != PAD_ID] = MASK_ID
        return Inputs({"patches": patches, "token_ids": ids}, list(inputs.sample_ids), dict(inputs.meta))

    @torch.no_grad()
    def trace(self, inputs: Inputs) -> AttentionSummary:
        """Per-layer summaries reduced inside forward hooks: no attention map outlives its layer."""
        ids = inputs.tensors["token_ids"]
        b, n = len(inputs), self.config.n_patches
        is_image = torch.tensor([False] + [True] * n + [False] * self.config.max_len)
        is_text = torch.cat([torch.zeros(b, 1 + n, dtype=torch.bool), ids != PAD_ID], 1)
        query_rows = is_text.clone()
        query_rows[:, 0] = True  # [CLS] reads out the score, so its allocation counts
        layers: list[dict[str, torch.Tensor]] = []

        def hook(_module, _args, probs):
            layers.append(reduce_attention(probs, query_rows, is_image, is_text, is_image, is_text))

        handles = [layer.attn.attn_probs.register_forward_hook(hook) for layer in self.net.layers]
        try:
            self.net(inputs.tensors["patches"], ids)
        finally:
            for h in handles:
                h.remove()
        stacked = {k: torch.stack([s[k] for s in layers], 1) for k in layers[0]}
        n_text = is_text.sum(1)
        return AttentionSummary(layer_names=[f"layer{i}" for i in range(len(layers))], **stacked,
                                n_image_tokens=n, n_text_tokens=int(n_text.max()), spans=self.spans,
                                n_text_per_sample=n_text)


class InHouseV2Adapter:
    """Registered as ``inhouse-v2`` through the ``fusionaudit.adapters`` entry point."""

    name = "inhouse-v2"
    family = FAMILY
    capabilities = CAPABILITIES
    # fusionaudit's contract test opens this: no checkpoint at "", so seeded random weights of one layer
    smoke = Smoke(random_init_config=(("layers", 1),))

    def locate(self, spec: ModelSpec) -> tuple[bool, list[str]]:
        path = Path(spec.source).expanduser()
        return path.is_file(), [str(path)]

    def load(self, spec: ModelSpec) -> InHouseV2Model:
        found, searched = self.locate(spec)
        path = Path(searched[0])
        if found:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            return InHouseV2Model(spec, load_checkpoint(path), f"{path.name}@sha256:{digest}", random_init=False)
        if spec.allow_random_init:
            options = spec.random_config
            seed = int(options.pop("seed", 0))
            unknown = set(options) - set(V2Config.__dataclass_fields__)
            if unknown:
                raise ValueError(f"{spec.name}: random_init_config keys {sorted(unknown)} are not V2Config fields; "
                                 f"use seed or {sorted(V2Config.__dataclass_fields__)}")
            config = V2Config(**options)  # e.g. layers: 1 for a smaller net
            return InHouseV2Model(spec, build_model(seed, config), f"random-init-seed{seed}", random_init=True)
        raise WeightsUnavailable(
            spec.name, f"V2 checkpoint {path} does not exist", searched,
            "copy the team's V2 checkpoint there (or write one with "
            "fusionaudit_example_plugin.save_checkpoint(path)), or run with --allow-random-init",
        )
