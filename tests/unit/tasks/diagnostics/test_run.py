"""diagnose() on real architectures: an untrained zoo network (fast) and a tiny open_clip CLIP."""
from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch

from tasks.adapters.contract import ModelSpec
from tasks.adapters.openclip import OpenClipAdapter
from tasks.adapters.zoo import calibration as zoo
from tasks.data.synthetic import make_synthetic
from tasks.diagnostics.run import MM_SHAP_PERMUTATIONS, PER_LAYER_COLUMNS, PER_SAMPLE_COLUMNS, diagnose
from tasks.diagnostics.shapley import modality_shapley

SHARES = ("modality_shapley_v", "ablation_visual_share", "mm_shap_v", "attn_visual_share", "rollout_visual_share",
          "relevance_visual_share", "mcs_entropy")


@pytest.fixture(scope="module")
def fusion():
    torch.manual_seed(0)
    config = zoo.DEFAULT_CONFIG
    return zoo.ZooModel(ModelSpec(name="untrained", adapter="zoo", source="balanced"), zoo.FusionTransformer(config).eval(),
                        config, "untrained", {}, from_cache=False)


@pytest.fixture(scope="module")
def samples():
    return make_synthetic(10, seed=3)


@pytest.fixture(scope="module")
def result(fusion, samples):
    return diagnose(fusion, samples, batch_size=4, mm_shap_permutations=4, keep_maps=3)


def test_every_metric_of_a_fusion_model(result, samples):
    ps, pl = result.per_sample, result.per_layer
    assert list(ps.columns) == list(PER_SAMPLE_COLUMNS) and list(pl.columns) == list(PER_LAYER_COLUMNS)
    assert ps["sample_id"].tolist() == [s.sample_id for s in samples]
    for column in SHARES:
        assert ps[column].between(0, 1).all(), column
    assert (ps["mm_shap_se"] >= 0).all() and (ps["mm_shap_permutations"] == 4).all()
    # 6 words → g = 2: 10 players; v(∅), v(all), then 2 antithetic steps of 2 × 9 coalitions
    assert (ps["mm_shap_evals"] == 2 + 2 * 2 * 9).all()
    assert (ps["attn_efficiency_ratio"] > 0).all()
    assert len(pl) == 10 * 2 and pl["rollout_visual_share"].notna().all()


def test_per_sample_values_summarise_the_layers(result):
    ps, pl = result.per_sample.set_index("sample_id"), result.per_layer
    means = pl.groupby("sample_id")[["attn_visual_share", "attn_efficiency_ratio"]].mean()
    assert np.allclose(ps.loc[means.index, "attn_visual_share"], means["attn_visual_share"])
    assert np.allclose(ps.loc[means.index, "attn_efficiency_ratio"], means["attn_efficiency_ratio"])
    last = pl[pl["layer_index"] == 1].set_index("sample_id")["rollout_visual_share"]
    assert np.allclose(ps.loc[last.index, "rollout_visual_share"], last)  # rollout is the last layer's value


def test_the_gate_metric_is_the_two_player_shapley(fusion, samples, result):
    inputs = fusion.prepare([s.image for s in samples], [s.caption for s in samples], [s.sample_id for s in samples])
    v = [fusion.score(fusion.mask(inputs, i, t)) for i, t in ((True, True), (True, False), (False, True), (False, False))]
    assert np.allclose(result.per_sample["modality_shapley_v"], modality_shapley(*v)["modality_shapley_v"].numpy())


def test_maps_are_kept_for_the_first_samples_only(result, samples):
    assert list(result.attention_maps) == [s.sample_id for s in samples[:3]]  # across the first two batches
    assert result.attention_maps[samples[0].sample_id]["layer1"].shape == (25, 25)


def test_mm_shap_switches_off_and_follows_a_target_error(fusion, samples):
    off = diagnose(fusion, samples[:4], mm_shap_permutations=0, keep_maps=0)
    assert off.per_sample["mm_shap_v"].isna().all() and off.attention_maps == {}
    loose = diagnose(fusion, samples[:4], mm_shap_permutations=40, mm_shap_target_se=10.0)
    assert (loose.per_sample["mm_shap_permutations"] == 8).all()  # the minimum before the error is trusted
    default = diagnose(fusion, samples[:2], keep_maps=0)
    assert (default.per_sample["mm_shap_permutations"] == MM_SHAP_PERMUTATIONS).all()


def test_a_score_only_model_gets_nan_not_an_error(fusion, samples):
    class ScoreOnly(zoo.ZooModel):
        capabilities = frozenset({"score"})

    model = ScoreOnly(fusion.spec, fusion.net, fusion.config, "untrained", {}, from_cache=False)
    out = diagnose(model, samples[:3])
    assert out.per_sample["v_full"].notna().all()
    assert out.per_sample.drop(columns=["sample_id", "v_full"]).isna().all().all()
    assert len(out.per_layer) == 0 and list(out.per_layer.columns) == list(PER_LAYER_COLUMNS)
    assert out.skipped["reason"].str.contains("'mask' capability").all()


def test_a_dual_encoder_gets_mm_shap_but_no_cross_modal_attention(tmp_path):
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}}
    (tmp_path / "fusionaudit-tiny-run.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path)
    torch.manual_seed(0)
    clip = OpenClipAdapter(device="cpu").load(ModelSpec(name="tiny-clip", adapter="openclip", source="",
                                                        arch="fusionaudit-tiny-run", allow_random_init=True))
    assert diagnose(clip, make_synthetic(1, seed=4), keep_maps=0).per_sample["mm_shap_v"].isna().all()  # random init
    out = diagnose(clip, make_synthetic(3, seed=4), mm_shap_permutations=4, keep_maps=1)
    ps = out.per_sample
    for column in ("attn_visual_share", "rollout_visual_share", "relevance_visual_share", "attn_efficiency_ratio"):
        assert ps[column].isna().all(), column
    assert ps[["modality_shapley_v", "ablation_visual_share", "mm_shap_v", "mm_shap_se"]].notna().all().all()
    assert ps["mcs_entropy"].isna().all()  # each tower has one modality only
    assert out.n_layers == 4 and set(out.attention_maps[ps["sample_id"][0]]) == {"visual.0", "visual.1", "text.0", "text.1"}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip-config")
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}}
    (folder / "fusionaudit-tiny-cached.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    return OpenClipAdapter(device="cpu").load(ModelSpec(name="tiny-clip", adapter="openclip", source="",
                                                        arch="fusionaudit-tiny-cached", allow_random_init=True))


@pytest.mark.parametrize("which", ["fusion", "tiny_clip"])
def test_the_cached_route_gives_the_plain_routes_values(which, request):
    """diagnose reuses the traced forward and (dual encoders) tower embeddings: the same four values as four
    plain score() calls on the masked batches, to 1e-6."""
    model, samples = request.getfixturevalue(which), make_synthetic(7, seed=5)
    out = diagnose(model, samples, batch_size=4, mm_shap_permutations=0, keep_maps=0).per_sample
    plain = []
    for start in range(0, len(samples), 4):
        chunk = samples[start:start + 4]
        inputs = model.prepare([s.image for s in chunk], [s.caption for s in chunk], [s.sample_id for s in chunk])
        plain.append(torch.stack([model.score(model.mask(inputs, i, t)).float()
                                  for i, t in ((True, True), (True, False), (False, True), (False, False))], 1))
    plain = torch.cat(plain).numpy()
    cached = out[["v_full", "v_image_only", "v_text_only", "v_empty"]].to_numpy()
    assert np.abs(cached - plain).max() <= 1e-6 * max(1.0, np.abs(plain).max())
