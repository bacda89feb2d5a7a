import math

import torch

from tasks.diagnostics.attention import mcs_entropy, reduce_attention

IMG = torch.tensor([True, True, False, False])
TXT = ~IMG


def test_uniform_attention_splits_mass_by_token_count_and_has_entropy_one():
    probs = torch.full((2, 3, 4, 4), 0.25)
    out = reduce_attention(probs, TXT, IMG, TXT, IMG, TXT)
    assert torch.allclose(out["visual_share"], torch.tensor([0.5, 0.5]))
    assert torch.allclose(out["entropy_visual"], torch.ones(2)) and torch.allclose(out["entropy_text"], torch.ones(2))


def test_text_rows_attending_only_to_text_give_zero_visual_share():
    probs = torch.zeros(1, 1, 4, 4)
    probs[..., 2] = 1.0  # every row puts all its mass on token 2 (text)
    out = reduce_attention(probs, TXT, IMG, TXT, IMG, TXT)
    assert out["visual_share"].item() == 0 and out["text_share"].item() == 1
    assert out["entropy_text"].item() == 0


def test_per_sample_masks_skip_padding_rows():
    probs = torch.full((2, 1, 4, 4), 0.25)
    probs[1, :, 3] = torch.tensor([1.0, 0, 0, 0])  # row 3 of sample 1 looks only at the image
    rows = torch.tensor([[False, False, True, True], [False, False, True, False]])  # sample 1: row 3 is padding
    out = reduce_attention(probs, rows, IMG, TXT, IMG, rows)
    assert torch.allclose(out["visual_share"], torch.tensor([0.5, 0.5]))


def test_no_image_keys_is_undefined_not_zero():
    out = reduce_attention(torch.full((1, 1, 2, 2), 0.5), torch.tensor([True, True]), torch.tensor([False, False]),
                           torch.tensor([True, True]), torch.tensor([False, False]), torch.tensor([True, True]))
    assert math.isnan(out["visual_share"].item()) and math.isnan(out["entropy_visual"].item())


def test_mcs_is_the_entropy_ratio():
    assert mcs_entropy(torch.tensor(0.2), torch.tensor(0.6)).item() == 0.25
