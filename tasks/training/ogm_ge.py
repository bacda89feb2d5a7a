"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022).

Per step, each modality's confidence is the summed probability its unimodal
prediction gives the true class, s_u = Σ_i p_u(y_i | x_i). With the
discrepancy ratio ρ_u = s_u / s_other, the dominant modality (ρ_u > 1) has
its encoder gradients scaled by k_u = 1 − tanh(α·ρ_u); the other keeps
k = 1. Generalisation enhancement then adds Gaussian noise N(0, σ²) with σ
the standard deviation of each modulated gradient tensor (as in the
authors' code), restoring the SGD noise that the scaling took away.

The paper's late-fusion models read a unimodal prediction off the half of
the classifier that sees one modality. A single-stream fusion has no such
split; here a modality's unimodal prediction is the fused model's with the
other modality masked (the diagnostics' own baselines: image → the pixel
mean, words → [MASK]), computed without gradient.
"""
from __future__ import annotations

import math

import torch

from tasks.adapters.zoo.calibration import _masked


@torch.no_grad()
def confidences(net, patches, ids, padding, targets) -> dict[str, float]:
    """s_image, s_text: summed probability of the true class with only that modality present."""
    everything = torch.ones(patches.shape[:2], dtype=torch.bool, device=patches.device)
    words = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
    image_only = _masked(patches, ids, padding, ~everything, words)
    text_only = _masked(patches, ids, padding, everything, ~words)
    out = {}
    for name, (p, t) in (("image", image_only), ("text", text_only)):
        prob = torch.sigmoid(net(p, t, padding))
        out[name] = float(torch.where(targets > 0.5, prob, 1 - prob).sum())
    return out


def coefficients(s_image: float, s_text: float, alpha: float) -> dict[str, float]:
    """k_image, k_text: 1 − tanh(α·ρ) for the dominant modality, 1 for the other."""
    ratio_image = s_image / max(s_text, 1e-12)
    if ratio_image > 1:
        return {"image": 1 - math.tanh(alpha * ratio_image), "text": 1.0}
    return {"image": 1.0, "text": 1 - math.tanh(alpha / max(ratio_image, 1e-12))}


def modulate(pathways, coeffs: dict[str, float], generator: torch.Generator | None = None) -> None:
    """Scale each modality pathway's gradients by its coefficient and add the GE noise (in place)."""
    for modality, k in coeffs.items():
        if k == 1.0:
            continue
        for _, params in pathways[modality]:
            for p in params:
                if p.grad is None:
                    continue
                sigma = p.grad.std().item() if p.grad.numel() > 1 else 0.0
                noise = torch.randn(p.grad.shape, generator=generator, device="cpu").to(p.grad.device) * (sigma + 1e-8)
                p.grad.mul_(k).add_(noise)
