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

Any network with ``forward_parts`` and ``pathways`` can be trained by
``tasks.training.train`` (see ``Trainable``); a user's model qualifies when
its adapter exposes its trainable modules (projector, fusion adapter, LoRA)
that way.
"""
from __future__ import annotations

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
