"""Chefer et al. (2021) relevance rules on tiny examples computed by hand."""
import pytest
import torch

from tasks.diagnostics.relevance import (
    RelevanceRow,
    cross_attention_rule,
    gradient_weighted_attention,
    normalise_self_relevance,
    self_attention_relevance,
    self_attention_rule,
)
from tasks.diagnostics.rollout import row_share

# Tokens 0 = [CLS], 1 = image, 2 = text.
CAM1 = torch.tensor([[[0.0, 0.5, 0.0], [0, 0, 0], [0, 0, 0]]])
CAM2 = torch.tensor([[[0.0, 0.0, 0.4], [0, 0, 0], [0, 0.2, 0]]])
# R1 = I + CAM1 = [[1, .5, 0], e1, e2]; R2 = R1 + CAM2·R1 = [[1, .5, .4], [0, 1, 0], [0, .2, 1]]
R2 = torch.tensor([[[1.0, 0.5, 0.4], [0, 1, 0], [0, 0.2, 1]]])


def test_gradient_weighted_attention_clips_negative_evidence_and_averages_heads():
    probs = torch.tensor([[[[0.5, 0.5]], [[1.0, 0.0]]]])     # [B=1, H=2, Q=1, K=2]
    grad = torch.tensor([[[[2.0, -4.0]], [[1.0, 3.0]]]])
    # head 0: (1, -2) → (1, 0); head 1: (1, 0); mean (1, 0)
    assert torch.allclose(gradient_weighted_attention(probs, grad), torch.tensor([[[1.0, 0.0]]]))


def test_self_attention_rule_two_layers_by_hand():
    assert torch.allclose(self_attention_relevance([CAM1, CAM2]), R2)
    r_ss, r_sq = self_attention_rule(torch.eye(2)[None], torch.tensor([[[0.0], [1.0]]]), torch.tensor([[[0, 0.5], [0, 0]]]))
    assert torch.allclose(r_sq, torch.tensor([[[0.5], [1.0]]]))  # eq. 7 carries cross relevance through self-attention
    assert torch.allclose(r_ss, torch.tensor([[[1.0, 0.5], [0, 1]]]))
    assert row_share(R2[:, 0], torch.tensor([False, True, False]), torch.tensor([False, False, True])).item() == \
        pytest.approx(0.5 / 0.9)


def test_streamed_row_equals_the_matrix_row():
    row = RelevanceRow(torch.tensor([0]), n_layers=2)
    probs = [torch.ones(1, 1, 3, 3), torch.ones(1, 1, 3, 3)]  # Ā = grad here, since probs = 1
    row.update(1, probs[1], CAM2[:, None])  # backward: last layer first
    row.update(0, probs[0], CAM1[:, None])
    assert row.complete and torch.allclose(row.row, R2[:, 0])


def test_streamed_row_refuses_layers_out_of_order():
    row = RelevanceRow(torch.tensor([0]), n_layers=2)
    with pytest.raises(RuntimeError, match="expected layer 1"):
        row.update(0, torch.ones(1, 1, 3, 3), CAM1[:, None])


def test_residual_normalisation_eq_8_9():
    r = torch.tensor([[2.0, 1.0], [0.5, 1.0]])
    # R − I = [[1, 1], [.5, 0]] → rows to sum 1 → [[.5, .5], [1, 0]] → + I
    assert torch.allclose(normalise_self_relevance(r), torch.tensor([[1.5, 0.5], [1.0, 1.0]]))
    assert torch.equal(normalise_self_relevance(torch.eye(2)), torch.eye(2))  # nothing beyond identity: unchanged


def test_cross_attention_rule_eq_10_11():
    r_ss = torch.tensor([[[1.5, 0.5], [0.0, 1.0]]])  # R̄^ss = R^ss here (its off-diagonal row already sums to 1)
    r_qq = torch.eye(2)[None]
    cam_sq = torch.tensor([[[0.2, 0.1], [0.0, 0.3]]])
    r_qs = torch.tensor([[[0.1, 0.0], [0.0, 0.2]]])
    r_sq, r_ss_new = cross_attention_rule(r_ss, r_qq, torch.zeros(1, 2, 2), r_qs, cam_sq)
    # (R̄^ss)ᵀ·Ā = [[1.5, 0], [.5, 1]]·[[.2, .1], [0, .3]] = [[.3, .15], [.1, .35]]
    assert torch.allclose(r_sq, torch.tensor([[[0.3, 0.15], [0.1, 0.35]]]))
    # eq. 11: R^ss + Ā·R^qs = R^ss + [[.02, .02], [0, .06]]
    assert torch.allclose(r_ss_new, r_ss + torch.tensor([[[0.02, 0.02], [0.0, 0.06]]]))
    _, unchanged = cross_attention_rule(r_ss, r_qq, torch.zeros(1, 2, 2), None, cam_sq)  # encoder-decoder: no eq. 11
    assert torch.equal(unchanged, r_ss)


def test_hook_needs_gradients():
    with pytest.raises(RuntimeError, match="require grad"):
        RelevanceRow(torch.tensor([0]), 1).hook(0, torch.ones(1, 1, 2, 2))
