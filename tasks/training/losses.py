"""The modality-balanced loss of the paper strategy: L = L_task + λ_v·L_visual + λ_t·L_text.

L_visual and L_text are the task loss of an auxiliary head on each modality's
own encoder output (the per-modality heads form, not the attention-based
term). Why this form: its gradient reaches each modality's pathway directly,
whatever the fusion does with it, so a pathway the fused loss has stopped
training keeps learning; an attention-based term would need the attention
maps traced inside the loss (a second graph through every fusion layer) and
pushes attention mass, which the calibration found to be a weak proxy of
what a model uses.
"""
from __future__ import annotations

import torch
from torch.nn.functional import binary_cross_entropy_with_logits as bce


def smoothed(targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return targets * (1 - label_smoothing) + label_smoothing / 2


def balanced_loss(parts: dict[str, torch.Tensor], targets: torch.Tensor, lambda_visual: float, lambda_text: float,
                  label_smoothing: float) -> dict[str, torch.Tensor]:
    """``total`` and its terms; a λ of 0 leaves its head out of the graph (its gradient is exactly zero)."""
    y = smoothed(targets, label_smoothing)
    terms = {"task": bce(parts["logit"], y)}
    total = terms["task"]
    for name, key, weight in (("visual", "image_logit", lambda_visual), ("text", "text_logit", lambda_text)):
        terms[name] = bce(parts[key], y).detach()  # logged whatever λ, so the curves show what each head knows
        if weight:
            total = total + weight * bce(parts[key], y)
    return {"total": total, **terms}
