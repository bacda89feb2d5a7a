"""The ALIGN adapter on a tiny random config of the real AlignModel (EfficientNet + BERT), offline."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import AlignModel

from tasks.adapters.align import AlignAdapter


@pytest.fixture(scope="module")
def adapter():
    return AlignAdapter


def test_random_init_builds_the_real_class(model):
    assert isinstance(model.model, AlignModel)
    assert model.random_init and AlignAdapter.family == "dual encoder"
    assert AlignAdapter.capabilities >= {"score", "mask", "mask_tokens", "separable", "trace"}
    assert model.model.config.vision_config.hidden_dim == 32
    assert model.model.config.text_config._attn_implementation == "eager"


def test_prepare_players_and_score(model, inputs):
    t = inputs.tensors
    assert t["pixel_values"].shape == (2, 3, 32, 32)
    assert t["pixel_values"].min() >= -1 and t["pixel_values"].max() <= 1  # ALIGN's [-1, 1] scaling
    assert (t["input_ids"][:, 0] == model.tokenizer.cls_token_id).all()
    assert model.players(inputs).text_valid.sum(1).tolist() == [6, 3]
    scores = model.score(inputs)
    with torch.no_grad():
        out = model.model(**inputs.tensors)
    assert scores.shape == (2,)
    assert torch.allclose(scores, torch.diag(out.logits_per_image), atol=1e-5)


def test_masking_changes_the_score_and_keeps_specials(model, inputs):
    base = model.score(inputs)
    no_text = model.mask(inputs, image_keep=True, text_keep=False)
    ids, masked = inputs.tensors["input_ids"], no_text.tensors["input_ids"]
    players = model.players(inputs).text_valid
    assert (masked[players] == model.tokenizer.mask_token_id).all() and torch.equal(masked[~players], ids[~players])
    assert not torch.allclose(model.score(no_text), base)
    assert not torch.allclose(model.score(model.mask(inputs, image_keep=False, text_keep=True)), base)


def test_trace_has_text_layers_only(model, inputs, trace_with_maps):
    layers = model.model.text_model.encoder.layer
    summary, maps = trace_with_maps(model, inputs, {f"text.{i}": layer.attention.self for i, layer in enumerate(layers)})
    captured = list(maps.values())
    assert summary.layer_names == ["text.0", "text.1"] and summary.n_image_tokens == 0
    assert torch.isnan(summary.visual_share).all() and torch.isnan(summary.entropy_visual).all()
    assert ((summary.entropy_text > 0) & (summary.entropy_text <= 1)).all()
    for probs in captured:
        assert probs.shape == (2, 4, 8, 8)
        assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5)
        assert probs[1, :, :, 5:].abs().max() < 1e-6  # padding keys get no attention
    probs = captured[0]
    ent = (-(probs * probs.clamp_min(1e-12).log()).sum(-1) / math.log(8)).mean(1)
    assert torch.allclose(summary.entropy_text[:, 0], torch.stack([ent[0].mean(), ent[1, :5].mean()]), atol=1e-5)


def test_allow_random_init_falls_back_when_the_hub_id_is_missing(smoke_spec, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    loaded = AlignAdapter(device="cpu").load(smoke_spec("kakaobrain/align-base", random=True))
    assert loaded.random_init and loaded.model.config.text_config.num_hidden_layers == 2
