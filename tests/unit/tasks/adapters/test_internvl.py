"""InternVL adapter (transformers-native InternVLForConditionalGeneration) on a tiny random config, offline."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import InternVLForConditionalGeneration

from tasks.adapters.contract import ModelSpec
from tasks.adapters.internvl import InternVLAdapter, tokens_per_tile
from tasks.data.synthetic import make_synthetic

TINY = InternVLAdapter.smoke.random_init_config


def _spec(source: str = "", random: bool = True) -> ModelSpec:
    return ModelSpec(name="tiny-internvl", adapter="internvl", source=source, allow_random_init=random,
                     random_init_config=TINY)


@pytest.fixture(scope="module")
def model():
    return InternVLAdapter(device="cpu").load(_spec())


@pytest.fixture(scope="module")
def samples():
    data = make_synthetic(3, seed=0, image_size=32)
    images = [s.image for s in data]
    images[1] = images[1].resize((64, 32))  # wide: two tiles plus a thumbnail
    return images, [s.caption for s in data], [s.sample_id for s in data]


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


def test_score_and_caption_positions(model, inputs, samples):
    ids, caption = inputs.tensors["input_ids"], inputs.meta["caption"]
    for i, text in enumerate(samples[1]):
        assert model.tokenizer.decode(ids[i][caption[i]]) == text.lower()
    scores = model.score(inputs)
    with torch.no_grad():
        logits = model.model(**inputs.tensors).logits
    last = inputs.meta["last"]
    assert (inputs.tensors["attention_mask"].sum(1) - 1 == last).all()  # right padding, whatever the processor's default
    expected = logits[torch.arange(3), last, model.yes_id] - logits[torch.arange(3), last, model.no_id]
    assert scores.shape == (3,) and torch.allclose(scores, expected, atol=1e-5)
    alone = torch.cat([model.score(model.prepare([im], [c], [s])) for im, c, s in zip(*samples)])
    assert torch.allclose(scores, alone, atol=1e-5)


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


def test_trace_shares(model, inputs):
    seen = []
    attn = [m for n, m in model.model.named_modules() if n.startswith("model.language_model.layers")
            and n.endswith("self_attn")]
    handles = [m.register_forward_hook(lambda _m, _a, out: seen.append(out[1].detach().clone())) for m in attn]
    try:
        summary = model.trace(inputs)
    finally:
        for h in handles:
            h.remove()
    assert summary.layer_names == ["lm.0", "lm.1"] and summary.visual_share.shape == (3, 2)
    meta = inputs.meta
    rows = meta["caption"].clone()
    rows[torch.arange(3), meta["last"]] = True
    for layer, probs in enumerate(seen):
        assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
        mean = probs.mean(1)
        for b in range(3):
            r = mean[b][rows[b]]
            expected = (r[:, meta["image"][b]].sum(-1) / r.sum(-1)).mean().item()
            assert math.isclose(summary.visual_share[b, layer].item(), expected, rel_tol=1e-4)
    assert ((summary.visual_share >= 0) & (summary.visual_share + summary.text_share <= 1 + 1e-6)).all()
    assert summary.n_image_tokens == 12
