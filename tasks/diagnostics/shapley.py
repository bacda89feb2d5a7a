"""The exact two-player modality Shapley value: the modalities are the players.

φ_I = ½[(v(I,T) − v(T)) + (v(I) − v(∅))], φ_T = ½[(v(I,T) − v(I)) + (v(T) − v(∅))];
efficiency holds (φ_I + φ_T = v(I,T) − v(∅)) and the value is symmetric in
the baselines, unlike a one-sided ablation. Four forward passes per sample.
"""
from __future__ import annotations

import torch


def modality_shapley(v_full: torch.Tensor, v_image: torch.Tensor, v_text: torch.Tensor, v_empty: torch.Tensor) -> dict[str, torch.Tensor]:
    """Shapley values of both modalities and the visual share |φ_I| / (|φ_I| + |φ_T|).

    ``v_image`` is the score with only the image kept (text masked), ``v_text``
    with only the text kept. The share is NaN where both values are zero (the
    sample's score does not depend on either modality: no share to speak of).
    """
    phi_image = 0.5 * ((v_full - v_text) + (v_image - v_empty))
    phi_text = 0.5 * ((v_full - v_image) + (v_text - v_empty))
    total = phi_image.abs() + phi_text.abs()
    share = torch.where(total > 1e-12, phi_image.abs() / total.clamp_min(1e-12), torch.full_like(total, float("nan")))
    return {"phi_image": phi_image, "phi_text": phi_text, "modality_shapley_v": share}


def imbalance(share: torch.Tensor | float) -> torch.Tensor | float:
    """max(s, 1 − s): how far one modality dominates, whichever it is."""
    if isinstance(share, torch.Tensor):
        return torch.maximum(share, 1 - share)
    return max(share, 1 - share)
