"""A zoo-sized fusion transformer whose depth of fusion and image magnitude are configurable.

[CLS] + image patches + caption words, as in the calibration zoo
(``tasks/adapters/zoo/calibration.py``, whose attention blocks and input encoding it
reuses), with three additions the mitigations need:

- per-modality encoder layers below the fusion (progressive fusion:
  ``fusion_depth`` of ``layers`` attend across modalities),
- one auxiliary head per modality on its pooled encoder output (the
  modality-balanced loss trains them; nothing else reads them),
- ``pathways()``: the parameters of each modality's pathway and of the
  fusion, layer by layer, for gradient flow and gradient modulation.

Networks are made by ``initialised`` (initial weights drawn from a given
generator alone) or ``loaded`` (weights from a state dict, nothing drawn),
never by the constructor's own initialisation: that draws from torch's
global generator, which every thread of the process shares, so a seeded
network would depend on what other threads drew meanwhile (a rediagnosis
loading a trained network while the next training initialised its own
gave a no-op variant a different model than the baseline's).

Any network with ``forward_parts`` and ``pathways`` can be trained by
``tasks.training.train`` (see ``Trainable``); a user's model qualifies when
its adapter exposes its trainable modules (projector, fusion adapter, LoRA)
that way.
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from tasks.adapters.zoo.calibration import Block
from tasks.data.synthetic import VOCAB
from tasks.training.config import ModelConfig

Pathways = dict[str, list[tuple[str, list[nn.Parameter]]]]


@runtime_checkable
class Trainable(Protocol):
    """What the trainer needs from a network."""

    def forward_parts(self, patches: torch.Tensor, token_ids: torch.Tensor, text_padding: torch.Tensor) -> dict[str, torch.Tensor]:
        """``logit`` [B] of the fused model and ``image_logit`` / ``text_logit`` [B] of the modality heads."""

    def pathways(self) -> Pathways:
        """``{"image": [(layer, params), ...], "text": [...], "fusion": [...]}`` in depth order."""


class ModalityFusionNet(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.dim
        self.config = config
        self.n_patches = (config.image_size // config.patch) ** 2
        self.patch_embed = nn.Linear(3 * config.patch**2, d)
        self.token_embed = nn.Embedding(len(VOCAB), d)
        self.image_pos = nn.Parameter(torch.randn(1, self.n_patches, d) * 0.02)
        self.text_pos = nn.Parameter(torch.randn(1, config.max_len, d) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.modality = nn.Embedding(3, d)  # 0 special, 1 image, 2 text
        self.register_buffer("pixel_mean", torch.zeros(3))
        self.register_buffer("pixel_std", torch.ones(3))
        own = config.layers - config.fusion_depth
        self.image_layers = nn.ModuleList(Block(d, config.heads) for _ in range(own))
        self.text_layers = nn.ModuleList(Block(d, config.heads) for _ in range(own))
        self.fusion_layers = nn.ModuleList(Block(d, config.heads) for _ in range(config.fusion_depth))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)
        self.aux_image = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 1))
        self.aux_text = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 1))

    @classmethod
    def initialised(cls, config: ModelConfig, generator: torch.Generator) -> ModalityFusionNet:
        """The initial network drawn from ``generator`` alone: a pure function of its seed, whatever other threads draw."""
        net = cls._shapes(config)
        net._initialise(generator)
        return net

    @classmethod
    def loaded(cls, config: ModelConfig, state: dict[str, torch.Tensor]) -> ModalityFusionNet:
        """The network with every parameter and buffer copied from ``state`` (strict); draws no random numbers."""
        net = cls._shapes(config)
        net.load_state_dict(state)
        return net

    @classmethod
    def _shapes(cls, config: ModelConfig) -> ModalityFusionNet:
        with torch.device("meta"):  # the constructor's initialisation runs on no data and draws nothing
            net = cls(config)
        return net.to_empty(device="cpu")  # every tensor is then written by _initialise or load_state_dict

    @torch.no_grad()
    def _initialise(self, generator: torch.Generator) -> None:
        """Every parameter and buffer, by PyTorch's default rules and in the constructor's order of draws, so a
        generator seeded with s gives the network ``torch.manual_seed(s)`` and the constructor gave."""
        def linear(m: nn.Linear) -> None:
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            nn.init.uniform_(m.bias, -1 / math.sqrt(m.in_features), 1 / math.sqrt(m.in_features), generator=generator)

        def norm(m: nn.LayerNorm) -> None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

        def block(b: Block) -> None:
            norm(b.norm1)
            norm(b.norm2)
            for m in (b.attn.qkv, b.attn.out, b.mlp[0], b.mlp[2]):
                linear(m)

        linear(self.patch_embed)
        nn.init.normal_(self.token_embed.weight, generator=generator)
        self.image_pos.copy_(torch.randn(self.image_pos.shape, generator=generator) * 0.02)
        self.text_pos.copy_(torch.randn(self.text_pos.shape, generator=generator) * 0.02)
        self.cls.zero_()
        nn.init.normal_(self.modality.weight, generator=generator)
        self.pixel_mean.zero_()
        self.pixel_std.fill_(1.0)
        for b in (*self.image_layers, *self.text_layers, *self.fusion_layers):
            block(b)
        norm(self.norm)
        linear(self.head)
        for aux in (self.aux_image, self.aux_text):
            norm(aux[0])
            linear(aux[1])

    @property
    def layers(self) -> nn.ModuleList:
        """The fusion layers (the zoo adapter's name for the layers that see both modalities)."""
        return self.fusion_layers

    def encode(self, patches, token_ids, text_padding) -> tuple[torch.Tensor, torch.Tensor]:
        """Each modality through its own layers: image [B, N, d], text [B, L, d]."""
        image = self.config.image_scale * self.patch_embed(patches) + self.image_pos + self.modality.weight[1]
        no_padding = torch.zeros(image.shape[:2], dtype=torch.bool, device=image.device)
        for layer in self.image_layers:
            image = layer(image, no_padding)
        text = self.token_embed(token_ids) + self.text_pos + self.modality.weight[2]
        for layer in self.text_layers:
            text = layer(text, text_padding)
        return image, text

    def forward_parts(self, patches, token_ids, text_padding) -> dict[str, torch.Tensor]:
        image, text = self.encode(patches, token_ids, text_padding)
        b = patches.shape[0]
        cls = self.cls.expand(b, -1, -1) + self.modality.weight[0]
        x = torch.cat([cls, image, text], dim=1)
        key_padding = torch.cat([torch.zeros(b, 1 + self.n_patches, dtype=torch.bool, device=x.device), text_padding], dim=1)
        for layer in self.fusion_layers:
            x = layer(x, key_padding)
        words = (~text_padding).unsqueeze(-1).float()
        pooled_text = (text * words).sum(1) / words.sum(1).clamp_min(1.0)
        return {"logit": self.head(self.norm(x[:, 0])).squeeze(-1),
                "image_logit": self.aux_image(image.mean(1)).squeeze(-1),
                "text_logit": self.aux_text(pooled_text).squeeze(-1)}

    def forward(self, patches, token_ids, text_padding) -> torch.Tensor:
        return self.forward_parts(patches, token_ids, text_padding)["logit"]

    def pathways(self) -> Pathways:
        params = lambda *modules: [p for m in modules for p in m.parameters()]  # noqa: E731
        return {
            "image": [("embed", params(self.patch_embed) + [self.image_pos])]
                     + [(f"layer{i}", params(m)) for i, m in enumerate(self.image_layers)],
            "text": [("embed", params(self.token_embed) + [self.text_pos])]
                    + [(f"layer{i}", params(m)) for i, m in enumerate(self.text_layers)],
            "fusion": [(f"layer{i}", params(m)) for i, m in enumerate(self.fusion_layers)]
                      + [("head", params(self.norm, self.head))],
        }
