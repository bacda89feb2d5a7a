"""The BLIP ITM adapter on a tiny random config of the real BlipForImageTextRetrieval, offline."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import BlipForImageTextRetrieval

from tasks.adapters.blip import BlipItmAdapter


@pytest.fixture(scope="module")
def adapter():
    return BlipItmAdapter


def test_random_init_builds_the_real_class_with_overrides(model):
    assert isinstance(model.model, BlipForImageTextRetrieval) and model.random_init
    assert BlipItmAdapter.capabilities >= {"score", "mask", "mask_tokens", "trace"}
    cfg = model.model.config
    assert cfg.text_config.encoder_hidden_size == 32 and cfg.text_config.is_decoder  # cross-attention layers built
    assert cfg.text_config._attn_implementation == "eager"
    assert cfg.vision_config.initializer_range == 0.02  # the adapter's random-init default: images matter


def test_score_is_the_itm_log_odds(model, inputs):
    scores = model.score(inputs)
    assert scores.shape == (2,)
    with torch.no_grad():
        logits = model.model(**inputs.tensors, use_itm_head=True).itm_score
    assert torch.allclose(scores, logits[:, 1] - logits[:, 0], atol=1e-5)


def test_masking_changes_the_score(model, inputs):
    base = model.score(inputs)
    players = model.players(inputs).text_valid
    assert players.sum(1).tolist() == [6, 3]
    no_text = model.mask(inputs, image_keep=True, text_keep=False)
    ids = no_text.tensors["input_ids"]
    assert (ids[players] == model.tokenizer.mask_token_id).all()
    assert (ids[:, 0] == model.tokenizer.cls_token_id).all()
    assert not torch.allclose(model.score(no_text), base)
    assert not torch.allclose(model.score(model.mask(inputs, image_keep=False, text_keep=True)), base)
    keep = torch.tensor([[[True, False], [False, True]]] * 2)
    cells = model.mask_tokens(inputs, keep, players).tensors["pixel_values"]
    assert (cells[:, :, :16, 16:] == 0).all()
    assert torch.equal(cells[:, :, :16, :16], inputs.tensors["pixel_values"][:, :, :16, :16])
    assert not torch.allclose(model.score(model.mask_tokens(inputs, keep, players)), base)


def test_trace_hooks_self_and_cross_attention(model, inputs, trace_with_maps):
    text_layers = model.model.text_encoder.encoder.layer
    modules = {"text.0.self": text_layers[0].attention.self, "text.0.cross": text_layers[0].crossattention.self,
               "text.1.cross": text_layers[1].crossattention.self}
    summary, captured = trace_with_maps(model, inputs, modules, keep_maps=2)
    assert summary.layer_names == ["vision.0", "vision.1", "text.0.self", "text.0.cross", "text.1.self",
                                   "text.1.cross"]
    assert summary.visual_share.shape == (2, 6) and summary.spans is None
    assert torch.isnan(summary.visual_share).all() and torch.isnan(summary.text_share).all()
    assert torch.isfinite(summary.entropy_visual[:, :2]).all() and torch.isnan(summary.entropy_visual[:, 2:]).all()
    assert torch.isfinite(summary.entropy_text[:, 2:]).all()
    assert ((summary.entropy_text[:, 2:] > 0) & (summary.entropy_text[:, 2:] <= 1)).all()
    assert summary.n_image_tokens == 17 and summary.n_text_per_sample.tolist() == [8, 5]
    cross = captured["text.0.cross"]
    assert cross.shape == (2, 4, 8, 17)  # text rows x image keys
    for probs in captured.values():
        assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5)
    assert summary.maps["text.0.cross"].shape == (2, 8, 17)
    # cross entropy: mean over the real text rows of the row entropy over the 17 image tokens
    ent = (-(cross * cross.clamp_min(1e-12).log()).sum(-1) / math.log(17)).mean(1)
    assert torch.allclose(summary.entropy_text[:, 3], torch.stack([ent[0].mean(), ent[1, :5].mean()]), atol=1e-5)


def test_checkpoint_folder_round_trip(model, inputs, smoke_spec, tmp_path):
    folder = tmp_path / "blip"
    model.model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    model.image_processor.save_pretrained(folder)
    loaded = BlipItmAdapter(device="cpu").load(smoke_spec(str(folder), random=False))
    assert not loaded.random_init
    assert torch.allclose(loaded.score(inputs), model.score(inputs), atol=1e-5)
