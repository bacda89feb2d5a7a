"""Qwen2-VL / Qwen2.5-VL adapters on tiny random configs of the real classes, offline."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import (
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLForConditionalGeneration,
)

from tasks.adapters.contract import ModelSpec
from tasks.adapters.qwen2_vl import Qwen2VLAdapter, Qwen25VLAdapter, patch_keep
from tasks.data.synthetic import make_synthetic

# M-RoPE splits each head's rotary half into (16, 24, 24) sections by default: head_dim 128 keeps that valid.
ADAPTERS = {"qwen2-vl": (Qwen2VLAdapter, Qwen2VLForConditionalGeneration),
            "qwen2.5-vl": (Qwen25VLAdapter, Qwen2_5_VLForConditionalGeneration)}


def _spec(name: str, source: str = "", random: bool = True) -> ModelSpec:
    return ModelSpec(name=f"tiny-{name}", adapter=name, source=source, allow_random_init=random,
                     random_init_config=ADAPTERS[name][0].smoke.random_init_config)


@pytest.fixture(scope="module", params=list(ADAPTERS))
def model(request):
    return ADAPTERS[request.param][0](device="cpu").load(_spec(request.param))


@pytest.fixture(scope="module")
def samples():
    data = make_synthetic(3, seed=0, image_size=32)
    images = [s.image for s in data]
    images[1] = images[1].resize((48, 32))  # another aspect ratio, another token count
    return images, [s.caption for s in data], [s.sample_id for s in data]


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


def test_caption_positions_and_score(model, inputs, samples):
    ids, caption = inputs.tensors["input_ids"], inputs.meta["caption"]
    for i, text in enumerate(samples[1]):
        assert model.tokenizer.decode(ids[i][caption[i]]) == text.lower()
    scores = model.score(inputs)
    with torch.no_grad():
        logits = model.model(**inputs.tensors).logits
    last = inputs.meta["last"]
    assert model.tokenizer.convert_ids_to_tokens(ids[torch.arange(3), last].tolist()) == ["assistant"] * 3
    expected = logits[torch.arange(3), last, model.yes_id] - logits[torch.arange(3), last, model.no_id]
    assert scores.shape == (3,) and torch.allclose(scores, expected, atol=1e-5)
    alone = torch.cat([model.score(model.prepare([im], [c], [s])) for im, c, s in zip(*samples)])
    assert torch.allclose(scores, alone, atol=1e-5)


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


def test_trace_shares_over_the_lm_layers(model, inputs):
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
    assert summary.spans is None  # image token counts differ across the batch: spans are per sample
    assert summary.n_image_tokens == int(meta["image"].sum(1).max())
