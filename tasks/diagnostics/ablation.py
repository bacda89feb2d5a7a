"""Ablation share: how much the score moves when each modality is replaced by its baseline.

ablation_visual_share = |v(I,T) − v(∅_I,T)| / (|v(I,T) − v(∅_I,T)| + |v(I,T) − v(I,∅_T)|),
from the same passes as the two-player Shapley value (tasks.diagnostics.shapley).
Unlike Shapley it ignores the interaction term's split: a model whose score
needs both modalities together (an AND) loses everything either way and
gets 0.5; a one-sided measure, so it is reported next to Shapley, not instead.
"""
from __future__ import annotations

import torch


def ablation_visual_share(v_full: torch.Tensor, v_image_only: torch.Tensor, v_text_only: torch.Tensor) -> torch.Tensor:
    """Image share of the two ablation effects; ``v_image_only`` = v(I, ∅_T), ``v_text_only`` = v(∅_I, T).

    NaN where removing either modality leaves the score unchanged.
    """
    drop_image = (v_full - v_text_only).abs()
    drop_text = (v_full - v_image_only).abs()
    total = drop_image + drop_text
    return torch.where(total > 1e-12, drop_image / total.clamp_min(1e-12), torch.full_like(total, float("nan")))
