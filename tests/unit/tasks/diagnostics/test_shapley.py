import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.diagnostics.shapley import imbalance, modality_shapley


def test_text_only_model_gets_zero_image_share():
    # v depends on the text alone: v(I,T) = v(T) = 3, v(I) = v(∅) = 1
    out = modality_shapley(torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([1.0]))
    assert out["phi_image"].item() == 0 and out["phi_text"].item() == 2
    assert out["modality_shapley_v"].item() == 0


def test_pure_interaction_is_split_equally_and_efficiency_holds():
    v_full, v_i, v_t, v_0 = (torch.tensor([x]) for x in (4.0, 0.0, 0.0, 0.0))
    out = modality_shapley(v_full, v_i, v_t, v_0)
    assert out["modality_shapley_v"].item() == 0.5
    assert (out["phi_image"] + out["phi_text"]).item() == (v_full - v_0).item()


def test_share_is_nan_when_neither_modality_matters():
    out = modality_shapley(*(torch.tensor([2.0]) for _ in range(4)))
    assert torch.isnan(out["modality_shapley_v"]).all()


def test_imbalance_is_symmetric():
    assert imbalance(0.1) == 0.9 and imbalance(0.9) == 0.9
    assert torch.allclose(imbalance(torch.tensor([0.2, 0.7])), torch.tensor([0.8, 0.7]))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=4, max_size=4))
def test_efficiency_and_symmetry_for_any_game(values):
    v_full, v_i, v_t, v_0 = (torch.tensor([x], dtype=torch.float64) for x in values)
    out = modality_shapley(v_full, v_i, v_t, v_0)
    assert torch.allclose(out["phi_image"] + out["phi_text"], v_full - v_0)
    swapped = modality_shapley(v_full, v_t, v_i, v_0)  # the modalities trade places
    assert torch.allclose(swapped["phi_image"], out["phi_text"]) and torch.allclose(swapped["phi_text"], out["phi_image"])
    share = out["modality_shapley_v"]
    assert torch.isnan(share).all() or (0 <= share.item() <= 1)
