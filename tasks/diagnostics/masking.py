"""Token-level masking shared by every adapter with capability ``mask_tokens``.

MM-SHAP's image players are the cells of a g×g grid laid over the model's
input image; each adapter maps a cell mask onto its own pixels with
``pixel_keep`` so that all architectures cut the image the same way.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def grid_side(n_text_players: int) -> int:
    """g = max(1, round(√t)): g² image cells for t text players, so both modalities have comparable player counts."""
    return max(1, round(math.sqrt(n_text_players)))


def pixel_keep(image_keep: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, g, g] cell mask → [B, height, width] pixel mask; pixel (y, x) belongs to cell (⌊y·g/H⌋, ⌊x·g/W⌋).

    Nearest-neighbour resizing gives exactly that partition, also when H is
    not a multiple of g (cells then differ by at most one pixel).
    """
    if image_keep.dim() != 3:
        raise ValueError(f"image_keep must be [batch, g, g] booleans, got shape {tuple(image_keep.shape)}")
    up = F.interpolate(image_keep[:, None].float(), size=(height, width), mode="nearest")
    return up[:, 0] > 0.5
