"""InternVL adapter (transformers-native InternVLForConditionalGeneration) on a tiny random config, offline."""
from __future__ import annotations

import pytest
import torch
from transformers import InternVLForConditionalGeneration

from tasks.adapters.internvl import InternVLAdapter, tokens_per_tile


@pytest.fixture(scope="module")
def adapter():
    return InternVLAdapter


@pytest.fixture(scope="module")
def samples(synthetic_samples):
    return synthetic_samples((64, 32))  # the wide one: two tiles plus a thumbnail


@pytest.fixture
def inputs(model, samples):
    return model.prepare(*samples)


def test_random_init_builds_the_real_class_with_overrides(model):
    assert type(model.model) is InternVLForConditionalGeneration
    assert model.model.config.text_config.num_hidden_layers == 2
    assert model.model.config._attn_implementation == "eager" and model.random_init
    assert tokens_per_tile(model.model.config) == 4


def test_image_tokens_are_the_context_tokens_of_every_tile(model, inputs):
    ids, image = inputs.tensors["input_ids"], inputs.meta["image"]
    assert torch.equal(image, ids == model.model.config.image_token_id)
    assert image.sum(1).tolist() == [4, 12, 4]  # one tile; two tiles + thumbnail; one tile
    assert inputs.tensors["pixel_values"].shape == (5, 3, 32, 32)
    tok = model.tokenizer
    for i, span in enumerate(inputs.meta["spans"]):
        start, stop = span.image
        assert ids[i, start - 1] == tok.start_image_token_id and ids[i, stop] == tok.end_image_token_id
        assert {start - 1, stop} <= set(span.special)  # <img> / </img> carry no image features


def test_score_and_caption_positions(model, inputs, samples, yes_no_scores):
    ids, caption = inputs.tensors["input_ids"], inputs.meta["caption"]
    for i, text in enumerate(samples[1]):
        assert model.tokenizer.decode(ids[i][caption[i]]) == text.lower()
    last = inputs.meta["last"]
    assert (inputs.tensors["attention_mask"].sum(1) - 1 == last).all()  # right padding, whatever the processor's default
    yes_no_scores(model, inputs, samples)


def test_masking_changes_the_score(model, inputs):
    full = model.score(inputs)
    no_text, no_image = model.mask(inputs, True, False), model.mask(inputs, False, True)
    assert torch.equal(no_text.tensors["input_ids"] != inputs.tensors["input_ids"], inputs.meta["caption"])
    assert (no_image.tensors["pixel_values"] == 0).all()
    for masked in (no_text, no_image):
        assert not torch.allclose(model.score(masked), full, atol=1e-6)


def test_masked_cells_are_painted_in_the_image_and_tiled_again(model, inputs):
    caption = inputs.meta["caption"]
    keep = torch.ones(3, 2, 2, dtype=torch.bool)
    same = model.mask_tokens(inputs, keep, torch.ones_like(caption))
    assert torch.equal(same.tensors["pixel_values"], inputs.tensors["pixel_values"])
    keep[0] = False  # the whole first image painted the mean colour → ≈ 0 everywhere after normalisation
    keep[2, 0, 0] = False
    masked = model.mask_tokens(inputs, keep, torch.ones_like(caption))
    pixels, original = masked.tensors["pixel_values"], inputs.tensors["pixel_values"]
    assert pixels.shape == original.shape
    assert pixels[0].abs().max() < 0.01  # mean colour rounded to 8 bits: within half a grey level / std
    assert torch.equal(pixels[1:4], original[1:4])  # the second image's tiles are untouched
    assert not torch.equal(pixels[4], original[4]) and torch.equal(pixels[4, :, 20:, 20:], original[4, :, 20:, 20:])
    assert not torch.allclose(model.score(masked), model.score(inputs), atol=1e-6)


def test_trace_shares(model, inputs, lm_shares_follow_attention):
    summary = lm_shares_follow_attention(model, inputs)
    assert summary.n_image_tokens == 12
