"""Qwen2-VL / Qwen2.5-VL adapters on tiny random configs of the real classes, offline."""
from __future__ import annotations

import pytest
import torch
from transformers import (
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLForConditionalGeneration,
)

from tasks.adapters.qwen2_vl import Qwen2VLAdapter, Qwen25VLAdapter, patch_keep

# M-RoPE splits each head's rotary half into (16, 24, 24) sections by default: head_dim 128 keeps that valid.
ADAPTERS = {"qwen2-vl": (Qwen2VLAdapter, Qwen2VLForConditionalGeneration),
            "qwen2.5-vl": (Qwen25VLAdapter, Qwen2_5_VLForConditionalGeneration)}


@pytest.fixture(scope="module", params=list(ADAPTERS))
def adapter(request):
    return ADAPTERS[request.param][0]


@pytest.fixture(scope="module")
def samples(synthetic_samples):
    return synthetic_samples((48, 32))  # another aspect ratio, another token count


@pytest.fixture
def inputs(model, samples):
    return model.prepare(*samples)


def _unpatchify(rows: torch.Tensor, h: int, w: int, patch: int, merge: int) -> torch.Tensor:
    """Inverse of the processor's patch layout: [h·w, C·T·P·P] → [C, h·P, w·P] (first temporal copy)."""
    x = rows.view(h // merge, w // merge, merge, merge, 3, -1, patch, patch)[..., 0, :, :]
    return x.permute(4, 0, 2, 5, 1, 3, 6).reshape(3, h * patch, w * patch)


def test_random_init_builds_the_real_class_with_overrides(model):
    cls = ADAPTERS[model.spec.adapter][1]
    assert type(model.model) is cls
    config = model.model.config
    assert config.text_config.num_hidden_layers == 2 and config.vision_config.depth == 2
    assert config._attn_implementation == "eager" and model.random_init
    assert model.capabilities >= {"score", "mask", "mask_tokens", "trace"}


def test_image_tokens_are_the_merged_patches_between_the_vision_markers(model, inputs):
    ids, image = inputs.tensors["input_ids"], inputs.meta["image"]
    config = model.model.config
    assert torch.equal(image, ids == config.image_token_id)
    grid = inputs.tensors["image_grid_thw"]
    assert image.sum(1).tolist() == (grid.prod(1) // 4).tolist()  # 2×2 merge
    assert image.sum(1)[0] != image.sum(1)[1]
    assert torch.equal(inputs.tensors["mm_token_type_ids"].bool(), image)
    for i, span in enumerate(inputs.meta["spans"]):
        start, stop = span.image
        assert image[i, start:stop].all() and image[i].sum() == stop - start
        assert ids[i, start - 1] == config.vision_start_token_id and ids[i, stop] == config.vision_end_token_id
        assert start - 1 in span.special and stop in span.special


def test_caption_positions_and_score(model, inputs, samples, yes_no_scores):
    ids, caption = inputs.tensors["input_ids"], inputs.meta["caption"]
    for i, text in enumerate(samples[1]):
        assert model.tokenizer.decode(ids[i][caption[i]]) == text.lower()
    last = inputs.meta["last"]
    assert model.tokenizer.convert_ids_to_tokens(ids[torch.arange(3), last].tolist()) == ["assistant"] * 3
    yes_no_scores(model, inputs, samples)


def test_masking_changes_the_score(model, inputs):
    full = model.score(inputs)
    no_text = model.mask(inputs, image_keep=True, text_keep=False)
    assert torch.equal(no_text.tensors["input_ids"] != inputs.tensors["input_ids"], inputs.meta["caption"])
    no_image = model.mask(inputs, image_keep=False, text_keep=True)
    assert (no_image.tensors["pixel_values"] == 0).all()
    for masked in (no_text, no_image):
        assert not torch.allclose(model.score(masked), full, atol=1e-6)


def test_a_masked_cell_zeroes_exactly_its_pixels(model, inputs):
    ip = model.processor.image_processor
    keep = torch.ones(3, 2, 2, dtype=torch.bool)
    keep[:, 1, 0] = False  # bottom-left quarter
    masked = model.mask_tokens(inputs, keep, torch.ones_like(inputs.meta["caption"]))
    start = 0
    for i, (_, h, w) in enumerate(inputs.tensors["image_grid_thw"].tolist()):
        before = _unpatchify(inputs.tensors["pixel_values"][start:start + h * w], h, w, ip.patch_size, ip.merge_size)
        after = _unpatchify(masked.tensors["pixel_values"][start:start + h * w], h, w, ip.patch_size, ip.merge_size)
        rows, cols = h * ip.patch_size, w * ip.patch_size
        assert (after[:, rows // 2:, :cols // 2] == 0).all()
        assert torch.equal(after[:, :rows // 2], before[:, :rows // 2])
        assert torch.equal(after[:, rows // 2:, cols // 2:], before[:, rows // 2:, cols // 2:])
        start += h * w
    assert not torch.allclose(model.score(masked), model.score(inputs), atol=1e-6)
    every = model.mask_tokens(inputs, torch.ones_like(keep), torch.ones_like(inputs.meta["caption"]))
    assert torch.equal(every.tensors["pixel_values"], inputs.tensors["pixel_values"])


def test_patch_keep_follows_the_merge_window_order():
    keep = torch.tensor([[True, False], [True, True]])  # top-right cell masked
    mask = patch_keep(keep, (4, 4), patch=1, merge=2)[:, 0, 0]
    # patches in order (window row, window col, row in window, col in window); window (0, 1) is the top-right
    assert mask.tolist() == [True] * 4 + [False] * 4 + [True] * 8


def test_trace_shares_over_the_lm_layers(model, inputs, lm_shares_follow_attention):
    summary = lm_shares_follow_attention(model, inputs)
    meta = inputs.meta
    assert summary.spans is None  # image token counts differ across the batch: spans are per sample
    assert summary.n_image_tokens == int(meta["image"].sum(1).max())
