import math

import pytest
import torch

from tasks.diagnostics.attention import attention_efficiency, mcs_entropy, reduce_attention

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


def test_efficiency_divides_each_share_by_its_token_count():
    # 16 image tokens hold 0.8 of the mass, 4 text tokens 0.2: per token 0.05 each, ratio 1
    out = attention_efficiency(torch.tensor([[0.8, 0.4]]), torch.tensor([[0.2, 0.6]]), 16, 4)
    assert torch.allclose(out["attn_visual_efficiency"], torch.tensor([[0.05, 0.025]]))
    assert torch.allclose(out["attn_text_efficiency"], torch.tensor([[0.05, 0.15]]))
    assert torch.allclose(out["attn_efficiency_ratio"], torch.tensor([[1.0, 1 / 6]]))


def test_efficiency_uses_per_sample_text_counts():
    shares = torch.tensor([[0.5], [0.5]])
    out = attention_efficiency(shares, shares, 10, torch.tensor([[5], [2]]))
    assert torch.allclose(out["attn_text_efficiency"], torch.tensor([[0.1], [0.25]]))
    assert torch.allclose(out["attn_efficiency_ratio"], torch.tensor([[0.5], [0.2]]))


def test_efficiency_is_undefined_without_tokens_or_cross_modal_attention():
    out = attention_efficiency(torch.tensor([float("nan"), 0.5]), torch.tensor([float("nan"), 0.0]), 4, 3)
    assert torch.isnan(out["attn_visual_efficiency"][0]) and torch.isnan(out["attn_efficiency_ratio"]).all()
    out = attention_efficiency(torch.tensor([0.5]), torch.tensor([0.5]), 0, 3)
    assert torch.isnan(out["attn_visual_efficiency"]).all()


def test_third_bucket_and_sink_aware_share_known_answer():
    """Keys: 0 = CLS (special), 1-2 = image, 3 = text. One query row, one head, one sample.

    Row mass 0.5 on CLS, 0.3 / 0.1 on the image keys, 0.1 on the text key: the image share divides by the
    whole row (0.4), the third bucket holds 0.5, and without the two sink keys (CLS and the first image
    key) the image keeps 0.1 of the remaining 0.2.
    """
    probs = torch.tensor([0.5, 0.3, 0.1, 0.1]).view(1, 1, 1, 4).expand(1, 1, 4, 4).clone()
    rows = torch.tensor([False, False, False, True])
    image, text = torch.tensor([False, True, True, False]), torch.tensor([False, False, False, True])
    out = reduce_attention(probs, rows, image, text, image, text, sink_k=2)
    assert out["visual_share"].item() == pytest.approx(0.4)
    assert out["text_share"].item() == pytest.approx(0.1)
    assert out["other_share"].item() == pytest.approx(0.5)
    assert out["sink_mass"].item() == pytest.approx(0.8)
    assert out["visual_share_sink_aware"].item() == pytest.approx(0.5)
    assert (out["visual_share"] + out["text_share"] + out["other_share"]).item() == pytest.approx(1.0)
