"""Relevance of Chefer, Gur & Wolf (ICCV 2021), "Generic attention-model explainability".

Every attention layer contributes its gradient-weighted map
Ā = E_h[(∇A ⊙ A)⁺] (eq. 5: heads averaged, negative evidence clipped).
Relevance matrices start as identity (self) and zero (cross) and are updated
layer by layer in forward order:

- self-attention of modality s (eq. 6, 7): R^ss ← R^ss + Ā·R^ss and
  R^sq ← R^sq + Ā·R^sq. A single-stream model (one sequence holding both
  modalities) only needs this rule on the whole sequence.
- cross-attention from s to q (eq. 10, 11): R^sq ← R^sq + (R̄^ss)ᵀ·Ā·R̄^qq and
  R^ss ← R^ss + Ā·R^qs, where R̄ = row-normalised (R − I) + I (eq. 8, 9)
  removes the identity's dominance of the self-relevance before it weights
  the cross-modal map.

The gradient is that of the explained logit: the predicted class, as in
the paper; with one binary logit s that is sign(s)·s (the class-0 logit of
a two-way softmax is −s up to a constant).

``RelevanceRow`` computes only the scored position's row of a single-stream
R = (I + Ā_L)···(I + Ā_1), from the left, as gradients arrive during
backward (last layer first): one [B, N] vector instead of an [B, N, N] matrix.
"""
from __future__ import annotations

import torch


def gradient_weighted_attention(probs: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Ā = mean over heads of (∇A ⊙ A)⁺ (eq. 5); [B, H, Q, K] → [B, Q, K]."""
    return (grad.detach().float() * probs.detach().float()).clamp_min(0).mean(dim=1)


def self_attention_rule(r_ss: torch.Tensor, r_sq: torch.Tensor | None, cam_ss: torch.Tensor):
    """Eq. 6 and 7: (R^ss + Ā·R^ss, R^sq + Ā·R^sq); ``r_sq`` None when there is no other modality."""
    return r_ss + cam_ss @ r_ss, (None if r_sq is None else r_sq + cam_ss @ r_sq)


def normalise_self_relevance(r: torch.Tensor) -> torch.Tensor:
    """Eq. 8 and 9: R̄ = (R − I) with rows scaled to sum 1, plus I. Rows of R − I that are all zero stay zero."""
    eye = torch.eye(r.shape[-1], device=r.device, dtype=r.dtype)
    r_hat = r - eye
    sums = r_hat.sum(-1, keepdim=True)
    r_hat = torch.where(sums > 0, r_hat / sums.clamp_min(1e-12), torch.zeros_like(r_hat))
    return r_hat + eye


def cross_attention_rule(r_ss: torch.Tensor, r_qq: torch.Tensor, r_sq: torch.Tensor, r_qs: torch.Tensor | None,
                         cam_sq: torch.Tensor):
    """Eq. 10 and 11 for a cross-attention layer whose queries are modality s and keys modality q.

    Shapes (batch first): R^ss [B,S,S], R^qq [B,Q,Q], R^sq [B,S,Q], R^qs [B,Q,S]
    (None for encoder-decoder models, where q is not conditioned on s),
    Ā^sq [B,S,Q]. Returns (R^sq, R^ss) updated.
    """
    r_sq = r_sq + normalise_self_relevance(r_ss).mT @ cam_sq @ normalise_self_relevance(r_qq)
    if r_qs is not None:
        r_ss = r_ss + cam_sq @ r_qs
    return r_sq, r_ss


def self_attention_relevance(cams: list[torch.Tensor]) -> torch.Tensor:
    """Single-stream R after every layer's Ā [B, N, N] (forward order): R = I, R ← R + Ā·R."""
    r = torch.eye(cams[0].shape[-1], device=cams[0].device).expand_as(cams[0]).clone()
    for cam in cams:
        r, _ = self_attention_rule(r, None, cam)
    return r


class RelevanceRow:
    """The scored rows of a single-stream R, accumulated in attention-gradient hooks.

    Register ``hook(layer, probs)`` on every layer's attention probabilities in
    the forward pass; backward then calls them last layer first, and
    ``row`` ends as R[p, :] for each sample's scored position p.
    """

    def __init__(self, positions: torch.Tensor, n_layers: int):
        self.positions, self.n_layers = positions, n_layers
        self.expected = n_layers - 1
        self.row: torch.Tensor | None = None

    def hook(self, layer: int, probs: torch.Tensor):
        if not probs.requires_grad:
            raise RuntimeError("attention probabilities do not require grad: relevance needs the model's parameters "
                               "to require grad (do not call requires_grad_(False) or run it under no_grad)")
        saved = probs.detach()

        def on_grad(grad: torch.Tensor) -> None:
            self.update(layer, saved, grad)

        probs.register_hook(on_grad)

    def update(self, layer: int, probs: torch.Tensor, grad: torch.Tensor) -> None:
        if layer != self.expected:
            raise RuntimeError(f"relevance got layer {layer}'s gradient, expected layer {self.expected}: the rule "
                               "needs the layers to be one sequential stack (every layer's gradient exactly once, last first)")
        cam = gradient_weighted_attention(probs, grad)
        if self.row is None:
            b, n = cam.shape[0], cam.shape[-1]
            self.row = torch.zeros(b, n, device=cam.device)
            self.row[torch.arange(b, device=cam.device), self.positions.to(cam.device)] = 1.0
        # e·(I + Ā_L)···(I + Ā_l): multiplying from the left, one layer at a time.
        self.row = self.row + (self.row.unsqueeze(1) @ cam).squeeze(1)
        self.expected -= 1

    @property
    def complete(self) -> bool:
        return self.expected == -1
