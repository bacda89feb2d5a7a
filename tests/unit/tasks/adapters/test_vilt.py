"""The ViLT adapter on a tiny random config of the real ViltForImageAndTextRetrieval, offline.

The two test images have different aspect ratios, so ViLT's processor pads
the batch and the model embeds padding patches: spans and masks must skip them.
"""
from __future__ import annotations


import pytest
import torch
from transformers import ViltForImageAndTextRetrieval

from tasks.adapters.vilt import ViltAdapter


@pytest.fixture(scope="module")
def adapter():
    return ViltAdapter


@pytest.fixture
def inputs(model, captions, random_images):
    # 40×48 → 32×32 (16 patches); 50×30 → 48×32 (24 patches): the first image is padded below
    return model.prepare(random_images([(40, 48), (50, 30)]), captions, ["s0", "s1"])


def test_random_init_builds_the_real_class(model):
    assert isinstance(model.model, ViltForImageAndTextRetrieval)
    assert model.random_init and ViltAdapter.family == "single-stream fusion"
    assert ViltAdapter.capabilities >= {"score", "mask", "mask_tokens", "trace", "rollout"}
    assert model.model.config.num_hidden_layers == 2


def test_prepare_pads_images_and_records_regions(model, inputs):
    t = inputs.tensors
    assert t["pixel_values"].shape == (2, 3, 48, 32) and t["pixel_mask"].shape == (2, 48, 32)
    assert model.image_region(inputs).tolist() == [[32, 32], [48, 32]]
    caption, image, spans = model.layout(inputs)
    assert spans.text == (0, 8) and spans.image == (8, 33) and spans.special == (0, 8)
    assert image.sum(1).tolist() == [17, 25] and caption.sum(1).tolist() == [8, 5]  # image CLS + real patches
    assert image[0, 8 + 1 + 16:].sum() == 0 and image[1, 8:].all()


def test_score_is_the_retrieval_logit(model, inputs):
    scores = model.score(inputs)
    assert scores.shape == (2,)
    with torch.no_grad():
        logits = model.model(**inputs.tensors).logits[:, 0]
    assert torch.allclose(scores, logits, atol=1e-5)
    assert torch.allclose(model.score(inputs), scores, atol=1e-5)  # ViLT shuffles patches; the score does not move


def test_masking_changes_the_score(model, inputs):
    base = model.score(inputs)
    players = model.players(inputs).text_valid
    no_text = model.mask(inputs, image_keep=True, text_keep=False)
    ids = no_text.tensors["input_ids"]
    assert (ids[players] == model.tokenizer.mask_token_id).all() and (ids[:, 0] == model.tokenizer.cls_token_id).all()
    assert not torch.allclose(model.score(no_text), base)
    no_image = model.mask(inputs, image_keep=False, text_keep=True)
    assert (no_image.tensors["pixel_values"] == 0).all()
    assert torch.equal(no_image.tensors["pixel_mask"], inputs.tensors["pixel_mask"])
    assert not torch.allclose(model.score(no_image), base)


def test_mask_tokens_cuts_each_images_real_region(model, inputs):
    keep = torch.tensor([[[True, False], [False, False]]] * 2)
    out = model.mask_tokens(inputs, keep, model.players(inputs).text_valid).tensors["pixel_values"]
    before = inputs.tensors["pixel_values"]
    assert torch.equal(out[0, :, :16, :16], before[0, :, :16, :16]) and (out[0, :, 16:] == 0).all()
    assert (out[0, :, :16, 16:] == 0).all()
    assert torch.equal(out[1, :, :24, :16], before[1, :, :24, :16])  # 48×32 region: cells of 24×16
    assert (out[1, :, 24:] == 0).all() and (out[1, :, :24, 16:] == 0).all()
    assert not torch.allclose(model.score(model.mask_tokens(inputs, keep, model.players(inputs).text_valid)),
                              model.score(inputs))


def test_trace_shares_follow_the_layout(model, inputs, trace_with_maps):
    layers = {f"layer{i}": layer.attention.attention for i, layer in enumerate(model.model.vilt.encoder.layer)}
    summary, maps = trace_with_maps(model, inputs, layers, keep_maps=1)
    captured = list(maps.values())
    assert summary.layer_names == ["layer0", "layer1"] and summary.spans.image == (8, 33)
    assert summary.n_image_tokens == 25 and summary.n_text_per_sample.tolist() == [8, 5]
    caption, image, _ = model.layout(inputs)
    for i, probs in enumerate(captured):
        assert probs.shape == (2, 4, 33, 33)
        assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5)
        assert probs[0, :, :, 25:].abs().max() < 1e-6  # padding patches of the first image get no attention
        mean = probs.mean(1)
        want = torch.stack([mean[b][caption[b]][:, image[b]].sum(-1).mean() for b in range(2)])
        assert torch.allclose(summary.visual_share[:, i], want, atol=1e-5)
    assert torch.allclose(summary.visual_share + summary.text_share, torch.ones(2, 2), atol=1e-5)
    assert ((summary.visual_share > 0) & (summary.visual_share < 1)).all()
    assert torch.isfinite(summary.entropy_visual).all() and torch.isfinite(summary.entropy_text).all()
    rollout = summary.extras["rollout_visual_share"]
    assert rollout.shape == (2, 2) and ((rollout > 0) & (rollout < 1)).all()
    assert summary.maps["layer0"].shape == (1, 33, 33)


def test_trace_leaves_vilt_returning_no_maps(model, inputs):
    model.trace(inputs)
    seen = []
    handle = model.model.vilt.encoder.layer[0].attention.attention.register_forward_hook(
        lambda m, a, out: seen.append(len(out)))
    try:
        model.score(inputs)
    finally:
        handle.remove()
    assert seen == [1]  # (context,) again: the request pre-hook is gone


def test_diagnose_computes_every_metric_it_offers(model):
    from tasks.data.synthetic import make_synthetic
    from tasks.diagnostics.run import diagnose

    result = diagnose(model, make_synthetic(2, seed=0), batch_size=2, mm_shap_permutations=2, keep_maps=1)
    row = result.per_sample.iloc[0]
    for metric in ("modality_shapley_v", "mm_shap_v", "ablation_visual_share", "attn_visual_share",
                   "rollout_visual_share"):
        assert 0 <= row[metric] <= 1, metric
    assert len(result.per_layer) == 4 and list(result.attention_maps) == ["syn-0-00000"]
