"""The BLIP-2 ITM adapter on a tiny random config of the real Blip2ForImageTextRetrieval, offline."""
from __future__ import annotations


import pytest
import torch
from transformers import Blip2ForImageTextRetrieval

from tasks.adapters.blip2 import Blip2ItmAdapter


@pytest.fixture(scope="module")
def adapter():
    return Blip2ItmAdapter


def test_random_init_builds_the_real_class_with_overrides(model):
    assert isinstance(model.model, Blip2ForImageTextRetrieval) and model.random_init
    assert Blip2ItmAdapter.capabilities >= {"score", "mask", "mask_tokens", "trace"}
    cfg = model.model.config
    assert cfg.num_query_tokens == 4 and model.model.query_tokens.shape == (1, 4, 32)
    assert cfg.qformer_config.use_qformer_text_input  # the adapter's random-init default: ITM needs text layers
    assert cfg.qformer_config.encoder_hidden_size == 32
    assert cfg.qformer_config._attn_implementation == "eager"


def test_score_is_the_itm_log_odds(model, inputs):
    scores = model.score(inputs)
    assert scores.shape == (2,)
    with torch.no_grad():
        logits = model.model(**inputs.tensors, use_image_text_matching_head=True).logits_per_image
    assert torch.allclose(scores, logits[:, 1] - logits[:, 0], atol=1e-5)


def test_checkpoints_with_image_placeholders_score_the_same(model, inputs):
    base = model.score(inputs)
    model.model.config.image_token_index = 5  # the model then expects (and drops) 4 placeholder ids in front
    try:
        assert torch.allclose(model.score(inputs), base, atol=1e-6)
    finally:
        model.model.config.image_token_index = None


def test_masking_changes_the_score(model, inputs):
    base = model.score(inputs)
    players = model.players(inputs).text_valid
    assert players.sum(1).tolist() == [6, 3]
    no_text = model.mask(inputs, image_keep=True, text_keep=False)
    assert (no_text.tensors["input_ids"][players] == model.tokenizer.mask_token_id).all()
    assert not torch.allclose(model.score(no_text), base)
    assert not torch.allclose(model.score(model.mask(inputs, image_keep=False, text_keep=True)), base)
    keep = torch.tensor([[[False, True], [True, True]]] * 2)
    assert not torch.allclose(model.score(model.mask_tokens(inputs, keep, players)), base)


def test_trace_measures_caption_rows_onto_the_query_tokens(model, inputs, trace_with_maps):
    layers = model.model.qformer.encoder.layer
    modules = {"qformer.0.self": layers[0].attention.attention, "qformer.0.cross": layers[0].crossattention.attention,
               "qformer.1.self": layers[1].attention.attention}
    summary, captured = trace_with_maps(model, inputs, modules, keep_maps=1)
    assert summary.layer_names == ["vision.0", "vision.1", "qformer.0.self", "qformer.0.cross", "qformer.1.self"]
    assert summary.spans.image == (0, 4) and summary.spans.text == (4, 12) and summary.spans.special == (4,)
    assert summary.n_image_tokens == 4 and summary.n_text_per_sample.tolist() == [8, 5]
    assert captured["qformer.0.self"].shape == (2, 4, 12, 12) and captured["qformer.0.cross"].shape == (2, 4, 4, 17)
    for probs in captured.values():
        assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5)
    valid = inputs.tensors["attention_mask"].bool()
    for col, name in ((2, "qformer.0.self"), (4, "qformer.1.self")):
        mean = captured[name].mean(1)  # heads averaged, [B, 12, 12]
        want = torch.stack([mean[i, 4:][valid[i]][:, :4].sum(-1).mean() for i in range(2)])
        assert torch.allclose(summary.visual_share[:, col], want, atol=1e-5)
        # every key is a query or a real caption token (padding keys get no mass): the shares add up to 1
        assert torch.allclose(summary.visual_share[:, col] + summary.text_share[:, col], torch.ones(2), atol=1e-5)
        assert torch.isfinite(summary.entropy_visual[:, col]).all()
        assert torch.isfinite(summary.entropy_text[:, col]).all()
    assert ((summary.visual_share[:, [2, 4]] > 0) & (summary.visual_share[:, [2, 4]] < 1)).all()
    # cross-attention: every key is an image patch, so no share; the queries' entropy is kept
    assert torch.isnan(summary.visual_share[:, 3]).all() and torch.isnan(summary.entropy_text[:, 3]).all()
    assert torch.isfinite(summary.entropy_visual[:, 3]).all()
    assert torch.isnan(summary.visual_share[:, :2]).all()  # ViT layers
    assert summary.maps["qformer.0.self"].shape == (1, 12, 12)
