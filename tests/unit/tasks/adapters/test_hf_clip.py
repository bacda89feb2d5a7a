"""The transformers CLIP adapter on a tiny random config of the real CLIPModel, offline."""
from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from transformers import CLIPModel

from tasks.adapters.hf_clip import ClipAdapter


@pytest.fixture(scope="module")
def adapter():
    return ClipAdapter


def test_random_init_builds_the_real_class(model):
    assert isinstance(model.model, CLIPModel)
    assert model.random_init and model.revision.startswith("random-init@")
    assert ClipAdapter.family == "dual encoder"
    assert ClipAdapter.capabilities >= {"score", "mask", "mask_tokens", "separable", "trace"}
    assert model.model.config.text_config.num_hidden_layers == 2
    assert model.model.config.vision_config._attn_implementation == "eager"


def test_prepare_and_players(model, inputs):
    t = inputs.tensors
    assert t["pixel_values"].shape == (2, 3, 32, 32)
    ids, valid = t["input_ids"], t["attention_mask"].bool()
    assert (ids[:, 0] == 62).all()  # BOS at the config's id
    assert ids.shape == (2, 8) and (ids[0] == 63).nonzero()[0].item() == 7  # 6 words, then EOS at the config's id
    players = model.players(inputs).text_valid
    assert players.sum(1).tolist() == [6, 3]
    assert not players[:, 0].any() and not (players & ~valid).any()


def test_score_is_the_models_own_pair_logit(model, inputs):
    scores = model.score(inputs)
    assert scores.shape == (2,)
    with torch.no_grad():
        out = model.model(**inputs.tensors)
    assert torch.allclose(scores, torch.diag(out.logits_per_image), atol=1e-5)


def test_mask_baselines(model, inputs):
    ids = inputs.tensors["input_ids"]
    no_image = model.mask(inputs, image_keep=False, text_keep=True)
    no_text = model.mask(inputs, image_keep=True, text_keep=False)
    assert (no_image.tensors["pixel_values"] == 0).all()
    masked = no_text.tensors["input_ids"]
    players = model.players(inputs).text_valid
    assert (masked[players] == model.mask_id).all() and torch.equal(masked[~players], ids[~players])
    assert model.mask_id == model.tokenizer.mask_token_id
    assert ids[0, 1] != model.mask_id  # the original inputs are untouched
    base = model.score(inputs)
    assert not torch.allclose(model.score(no_image), base)
    assert not torch.allclose(model.score(no_text), base)


def test_mask_tokens_zeroes_cells_and_masks_players(model, inputs):
    keep = torch.tensor([[[True, False], [False, False]], [[True, True], [True, True]]])
    text_keep = torch.ones_like(inputs.tensors["input_ids"], dtype=torch.bool)
    text_keep[0, 2] = False
    out = model.mask_tokens(inputs, keep, text_keep)
    pixels, before = out.tensors["pixel_values"], inputs.tensors["pixel_values"]
    assert torch.equal(pixels[0, :, :16, :16], before[0, :, :16, :16])  # the kept top-left cell
    assert (pixels[0, :, 16:, :] == 0).all() and (pixels[0, :, :16, 16:] == 0).all()
    assert torch.equal(pixels[1], before[1])
    ids = out.tensors["input_ids"]
    assert ids[0, 2] == model.mask_id and (ids != inputs.tensors["input_ids"]).sum() == 1
    text_keep[0, 0] = False  # BOS is no player: the keep flag is ignored there
    assert model.mask_tokens(inputs, keep, text_keep).tensors["input_ids"][0, 0] == 62
    with pytest.raises(ValueError, match="text_keep"):
        model.mask_tokens(inputs, keep, text_keep[:, :3])


def test_trace_reduces_each_tower_inside_hooks(model, inputs, trace_with_maps):
    layers = [*model.model.vision_model.encoder.layers, *model.model.text_model.encoder.layers]
    names = ["vision.0", "vision.1", "text.0", "text.1"]
    modules = {n: layer.self_attn for n, layer in zip(names, layers)}
    summary, captured = trace_with_maps(model, inputs, modules, keep_maps=1)
    assert summary.layer_names == names and summary.spans is None
    assert torch.isnan(summary.visual_share).all() and torch.isnan(summary.text_share).all()
    ent_v, ent_t = summary.entropy_visual, summary.entropy_text
    assert torch.isfinite(ent_v[:, :2]).all() and torch.isnan(ent_v[:, 2:]).all()
    assert torch.isfinite(ent_t[:, 2:]).all() and torch.isnan(ent_t[:, :2]).all()
    assert ((ent_v[:, :2] > 0) & (ent_v[:, :2] <= 1)).all() and ((ent_t[:, 2:] > 0) & (ent_t[:, 2:] <= 1)).all()
    assert summary.n_image_tokens == 17 and summary.n_text_tokens == 8
    assert summary.n_text_per_sample.tolist() == [8, 5]
    for n, probs in captured.items():
        assert probs.shape == ((2, 4, 17, 17) if n.startswith("vision") else (2, 4, 8, 8))
        assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5)
        assert summary.maps[n].shape == (1, *probs.shape[-2:])
    # text entropy averages the rows of real tokens only: recompute text.0 by hand
    probs = captured["text.0"]
    ent = (-(probs * probs.clamp_min(1e-12).log()).sum(-1) / math.log(8)).mean(1)
    assert torch.allclose(ent_t[:, 2], torch.stack([ent[0, :8].mean(), ent[1, :5].mean()]), atol=1e-5)


def test_checkpoint_folder_with_its_own_processor(model, inputs, captions, smoke_spec, tmp_path):
    folder = tmp_path / "clip"
    model.model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    model.image_processor.save_pretrained(folder)
    loaded = ClipAdapter(device="cpu").load(smoke_spec(str(folder), random=False))
    assert not loaded.random_init and loaded.revision.startswith("clip@sha256:")
    assert ClipAdapter().locate(smoke_spec(str(folder))) == (True, [str(folder)])
    again = loaded.prepare([Image.new("RGB", (40, 48))] * 2, captions, ["s0", "s1"])
    assert torch.equal(again.tensors["input_ids"], inputs.tensors["input_ids"])
    assert torch.allclose(loaded.score(inputs), model.score(inputs), atol=1e-6)


def test_diagnose_runs_mm_shap_through_the_towers(model):
    from tasks.data.synthetic import make_synthetic
    from tasks.diagnostics.run import diagnose

    result = diagnose(model, make_synthetic(2, seed=0), batch_size=2, mm_shap_permutations=2)
    row = result.per_sample.iloc[0]
    for metric in ("modality_shapley_v", "mm_shap_v", "ablation_visual_share"):
        assert 0 <= row[metric] <= 1, metric
    assert result.per_layer["attn_visual_share"].isna().all()  # a dual encoder has no cross-modal attention
