"""Attention rollout (Abnar & Zuidema, ACL 2020), accumulated inside forward hooks.

Per layer the heads are averaged, the residual path is added as identity,
Â = 0.5·A + 0.5·I with rows renormalised, and the layers compose as
R = Â_L ··· Â_1. The image share of a scored position p (CLS, or the last
token of a decoder) is R[p, image] / (R[p, image] + R[p, text]): special
tokens hold mass too, and leaving them out keeps the share comparable with
``attn_visual_share``.

``Rollout`` keeps one [B, N, N] matrix, updated once per layer in forward
order, so memory does not grow with depth.
"""
from __future__ import annotations

import torch


def residual_attention(probs: torch.Tensor) -> torch.Tensor:
    """Â of one layer: head mean of ``probs`` [B, H, N, N], plus identity, rows renormalised."""
    a = probs.detach().float().mean(dim=1)
    eye = torch.eye(a.shape[-1], device=a.device)
    a_hat = 0.5 * a + 0.5 * eye
    return a_hat / a_hat.sum(-1, keepdim=True).clamp_min(1e-12)


def rollout_share(rollout: torch.Tensor, row: torch.Tensor | int, image_cols: torch.Tensor,
                  text_cols: torch.Tensor) -> torch.Tensor:
    """Image share of row ``row`` of R [B, N, N] (one position, or a per-sample [B] index)."""
    b = rollout.shape[0]
    idx = torch.as_tensor(row, device=rollout.device)
    idx = idx.expand(b) if idx.dim() == 0 else idx
    return row_share(rollout[torch.arange(b, device=rollout.device), idx], image_cols, text_cols)


def row_share(values: torch.Tensor, image_cols: torch.Tensor, text_cols: torch.Tensor) -> torch.Tensor:
    """Mass of ``values`` [B, N] on image columns ÷ mass on image + text columns.

    Column masks are [N] or per sample [B, N] (e.g. padding excluded). NaN
    where both masses are zero: the row says nothing about either modality.
    """
    b = values.shape[0]
    img = (values * _cols(image_cols, b, values)).sum(-1)
    txt = (values * _cols(text_cols, b, values)).sum(-1)
    total = img + txt
    return torch.where(total > 0, img / total.clamp_min(1e-12), torch.full_like(total, float("nan")))


def _cols(mask: torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    mask = mask.to(device=like.device, dtype=like.dtype)
    return mask.expand(batch, -1) if mask.dim() == 1 else mask


class Rollout:
    """Streaming rollout: ``update`` with each layer's probs in forward order, read ``matrix``.

    Use inside a forward hook: ``rollout.update(probs)`` then, if a per-layer
    profile is wanted, ``rollout.share(row, image_cols, text_cols)``.
    """

    def __init__(self) -> None:
        self.matrix: torch.Tensor | None = None  # R after the layers seen so far, [B, N, N]
        self.layers = 0

    def update(self, probs: torch.Tensor) -> torch.Tensor:
        a_hat = residual_attention(probs)
        self.matrix = a_hat if self.matrix is None else a_hat @ self.matrix
        self.layers += 1
        return self.matrix

    def share(self, row: torch.Tensor | int, image_cols: torch.Tensor, text_cols: torch.Tensor) -> torch.Tensor:
        if self.matrix is None:
            raise RuntimeError("Rollout.share before any update: call update(probs) from each layer's hook first")
        return rollout_share(self.matrix, row, image_cols, text_cols)
