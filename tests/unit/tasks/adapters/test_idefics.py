"""IDEFICS adapter (Flamingo-style gated cross-attention) on a tiny random config, offline."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from transformers import IdeficsForVisionText2Text

from tasks.adapters.idefics import SMOKE, IdeficsAdapter, gate_value

TINY = SMOKE.random_init_config


@pytest.fixture(scope="module")
def adapter():
    return IdeficsAdapter


@pytest.fixture(scope="module")
def samples(synthetic_samples):
    return synthetic_samples((64, 32))


@pytest.fixture
def inputs(model, samples):
    return model.prepare(*samples)


def test_random_init_builds_the_real_class_with_overrides(model):
    assert type(model.model) is IdeficsForVisionText2Text
    config = model.model.config
    assert config.num_hidden_layers == 2 and config.vision_config.embed_dim == 32 and model.random_init
    assert config._attn_implementation == "eager"
    assert IdeficsAdapter.family == "LLM with gated cross-attention (Flamingo-style)"
    assert model.prompt.prefix == "User:<image>Does this caption describe the image? Caption: "
    assert model.prompt.suffix.endswith("<end_of_utterance>\nAssistant:") and model.prompt.yes == " Yes"


def test_the_lm_sequence_has_no_image_tokens(model, inputs, samples):
    ids, caption = inputs.tensors["input_ids"], inputs.meta["caption"]
    assert not inputs.meta["image"].any()
    tok = model.tokenizer
    for i, text in enumerate(samples[1]):
        assert tok.decode(ids[i][caption[i]]) == text.lower()
        assert inputs.meta["spans"][i].image == (0, 0)
        placeholder = (ids[i] == tok.image_token_id).nonzero().flatten().tolist()
        assert len(placeholder) == 1 and placeholder[0] in inputs.meta["spans"][i].special
    # caption rows come after the placeholder, so they see the image through cross-attention
    assert inputs.tensors["image_attention_mask"][caption].all()
    assert inputs.tensors["pixel_values"].shape == (3, 1, 3, 32, 32)


def test_score_and_masking(model, inputs, samples, yes_no_scores):
    scores = yes_no_scores(model, inputs, samples)
    no_text, no_image = model.mask(inputs, True, False), model.mask(inputs, False, True)
    assert torch.equal(no_text.tensors["input_ids"] != inputs.tensors["input_ids"], inputs.meta["caption"])
    assert (no_image.tensors["pixel_values"] == 0).all()
    for masked in (no_text, no_image):
        assert not torch.allclose(model.score(masked), scores, atol=1e-6)
    keep = torch.ones(3, 2, 2, dtype=torch.bool)
    keep[:, 0, 1] = False  # top-right quarter
    cells = model.mask_tokens(inputs, keep, torch.ones_like(inputs.meta["caption"])).tensors["pixel_values"]
    assert (cells[..., :16, 16:] == 0).all()
    assert torch.equal(cells[..., 16:, :], inputs.tensors["pixel_values"][..., 16:, :])


def test_closed_gates_shut_the_image_out(smoke_spec, samples):
    closed_gates = replace(smoke_spec(), random_init_config=TINY[:-1])  # alpha_initializer "zeros", as trained
    closed = IdeficsAdapter(device="cpu").load(closed_gates)
    inputs = closed.prepare(*samples)
    assert torch.allclose(closed.score(closed.mask(inputs, False, True)), closed.score(inputs), atol=1e-6)
    summary = closed.trace(inputs)
    assert (summary.extras["gate_attn"][:, ::2] == 0).all()
    assert (summary.extras["xattn_update_ratio"][:, ::2] == 0).all()


def test_trace_hooks_cross_attention_and_logs_the_gates(model, inputs, trace_with_maps):
    layers = model.model.model.gated_cross_attn_layers
    summary, maps = trace_with_maps(model, inputs, {f"xattn.{i}": layer.cross_attn for i, layer in enumerate(layers)})
    assert summary.layer_names == ["xattn.0", "lm.0", "xattn.1", "lm.1"]
    assert summary.visual_share.shape == (3, 4) and summary.visual_share.isnan().all()  # documented: NaN
    assert not summary.entropy_text.isnan().any() and summary.entropy_visual.isnan().all()
    assert summary.n_image_tokens == 17  # 4×4 patches + CLS: the cross-attention keys
    rows = inputs.meta["caption"].clone()
    rows[torch.arange(3), inputs.meta["last"]] = True
    for i, probs in enumerate(maps.values()):
        assert probs.shape[-1] == 17
        valid = probs[rows[:, None, :].expand(-1, probs.shape[1], -1)]
        assert torch.allclose(valid.sum(-1), torch.ones(()), atol=1e-5)
        p = probs.float()
        ent = -(p * p.clamp_min(1e-12).log()).sum(-1).mean(1) / math.log(17)  # [B, Q]
        expected = (ent * rows).sum(1) / rows.sum(1)
        assert torch.allclose(summary.entropy_text[:, 2 * i], expected, atol=1e-5)
    gates = summary.extras["gate_attn"]
    for i, layer in enumerate(layers):
        assert torch.allclose(gates[:, 2 * i], torch.tanh(layer.alpha_cross_attn.detach()).expand(3))
        assert torch.allclose(summary.extras["gate_dense"][:, 2 * i], torch.tanh(layer.alpha_dense.detach()).expand(3))
    assert gates[:, 1::2].isnan().all()
    ratio = summary.extras["xattn_update_ratio"]
    assert (ratio[:, ::2] > 0).all() and ratio[:, 1::2].isnan().all()


def test_gate_value_of_vector_gates():
    assert gate_value(torch.tensor([0.5])) == pytest.approx(math.tanh(0.5))
    assert gate_value(torch.tensor([[[1.0, -1.0]]])) == pytest.approx(math.tanh(1.0))
