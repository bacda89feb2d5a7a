"""Attention rollout against a three-layer example computed by hand.

Tokens: 0 = [CLS], 1 = image, 2 = text. With Â = ½A + ½I:
Â1 = [[½,½,0],[0,1,0],[0,0,1]], Â2 = [[½,0,½],[0,1,0],[0,0,1]], Â3 = [[½,¼,¼],[0,1,0],[0,0,1]];
R = Â3·Â2·Â1 has [CLS] row [1/8, 3/8, 1/2], so the image share is (3/8)/(3/8 + 1/2) = 3/7.
"""
import math

import pytest
import torch

from tasks.diagnostics.rollout import Rollout, residual_attention, rollout_share, row_share

IMAGE = torch.tensor([False, True, False])
TEXT = torch.tensor([False, False, True])


def _layer(*heads):
    """[1, H, 3, 3] probabilities from per-head row lists."""
    return torch.tensor([heads], dtype=torch.float32)


E1, E2 = [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
LAYER1 = _layer([E1, E1, E2])
LAYER2 = _layer([E2, E1, E2])
# two heads whose mean is [[0, ½, ½], e1, e2]: the rollout averages heads first
LAYER3 = _layer([E1, E1, E2], [E2, E1, E2])


def test_residual_attention_adds_identity_and_keeps_rows_stochastic():
    a_hat = residual_attention(LAYER3)[0]
    assert torch.allclose(a_hat, torch.tensor([[0.5, 0.25, 0.25], [0, 1, 0], [0, 0, 1]]))
    # rows that do not sum to one (e.g. a head-mean of a map with dropped columns) are renormalised
    assert torch.allclose(residual_attention(LAYER3 * 0.5).sum(-1), torch.ones(1, 3))


def test_three_layers_by_hand():
    rollout = Rollout()
    shares = []
    for probs in (LAYER1, LAYER2, LAYER3):
        rollout.update(probs)
        shares.append(rollout.share(0, IMAGE, TEXT).item())
    assert torch.allclose(rollout.matrix[0, 0], torch.tensor([1 / 8, 3 / 8, 1 / 2]))
    assert rollout.layers == 3
    # after layer 1 [CLS] holds ½ on the image, none on text; after layer 2 [¼, ¼, ½]
    assert shares == pytest.approx([1.0, 1 / 3, 3 / 7])
    assert torch.allclose(rollout.matrix.sum(-1), torch.ones(1, 3))


def test_the_product_order_matters():
    reverse = Rollout()
    for probs in (LAYER3, LAYER2, LAYER1):
        reverse.update(probs)
    assert not math.isclose(reverse.share(0, IMAGE, TEXT).item(), 3 / 7, abs_tol=1e-3)


def test_per_sample_rows_and_columns():
    r = torch.stack([torch.eye(3), torch.tensor([[0.2, 0.3, 0.5], [0, 1, 0], [0.1, 0.6, 0.3]])])
    # sample 0 reads row 2 (all on text), sample 1 row 2 too but its text column is padding
    cols_text = torch.tensor([[False, False, True], [False, False, False]])
    out = rollout_share(r, torch.tensor([2, 2]), IMAGE, cols_text)
    assert out.tolist() == pytest.approx([0.0, 1.0])


def test_share_is_nan_without_mass_on_either_modality():
    assert torch.isnan(row_share(torch.tensor([[1.0, 0.0, 0.0]]), IMAGE, TEXT)).all()
    with pytest.raises(RuntimeError, match="update"):
        Rollout().share(0, IMAGE, TEXT)
