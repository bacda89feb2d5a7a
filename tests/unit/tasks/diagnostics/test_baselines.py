"""The share under other masking baselines, on planted-truth models whose answer is known."""
import numpy as np
import pytest

from tasks.adapters.contract import ModelSpec
from tasks.adapters.registry import get_adapter
from tasks.data.synthetic import make_synthetic
from tasks.diagnostics.baselines import COLUMNS, blurred
from tasks.diagnostics.run import diagnose

SAMPLES = make_synthetic(8, seed=2)


def _run(variant, batch_size=4):
    model = get_adapter("planted").load(ModelSpec(name=variant, adapter="planted", source=variant))
    return diagnose(model, SAMPLES, batch_size=batch_size).per_sample


def test_a_model_that_ignores_the_text_has_share_one_under_every_baseline():
    ps = _run("image_only")
    for column in ("modality_shapley_v", *COLUMNS):
        assert ps[column].to_numpy() == pytest.approx(np.ones(len(SAMPLES))), column


def test_a_presence_detector_flips_with_the_baseline_and_the_default_is_unchanged():
    ps = _run("constant")
    assert ps["modality_shapley_v"].to_numpy() == pytest.approx(np.full(8, 0.9))
    # a blurred or another image is still "an image": the planted constant model sees no difference
    assert ps["shapley_v_image_blur"].to_numpy() == pytest.approx(np.zeros(8))


def test_another_samples_input_needs_a_batch_of_two():
    ps = _run("additive", batch_size=1)
    assert ps["shapley_v_image_other"].isna().all() and ps["shapley_v_text_other"].isna().all()
    assert ps["shapley_v_image_blur"].notna().all()
    assert blurred(SAMPLES[0].image).size == SAMPLES[0].image.size


def test_a_dual_encoder_reuses_its_tower_embeddings_with_the_same_values_as_whole_passes():
    """The alternatives of a dual encoder from its embeddings equal the shares from whole score() passes."""
    import torch

    from tasks.adapters.openclip import SMOKE_ARCH, OpenClipAdapter, register_smoke_arch
    from tasks.diagnostics.baselines import baseline_shares
    from tasks.diagnostics.run import _contributions, _towers

    register_smoke_arch()
    torch.manual_seed(0)
    clip = OpenClipAdapter(device="cpu").load(ModelSpec(name="tiny-clip", adapter="openclip", source="", arch=SMOKE_ARCH,
                                                        allow_random_init=True))
    images, captions, ids = [s.image for s in SAMPLES], [s.caption for s in SAMPLES], [s.sample_id for s in SAMPLES]
    inputs = clip.prepare(images, captions, ids)
    towers = _towers(clip, inputs, None)
    row = _contributions(clip, inputs, None, towers)
    v = [torch.tensor(row[c].to_numpy()) for c in ("v_full", "v_image_only", "v_text_only")]
    from_towers = baseline_shares(clip, images, captions, ids, *v, towers=towers)
    from_passes = baseline_shares(clip, images, captions, ids, *v)
    for column in COLUMNS:
        assert from_towers[column] == pytest.approx(from_passes[column], abs=1e-4, nan_ok=True), column
