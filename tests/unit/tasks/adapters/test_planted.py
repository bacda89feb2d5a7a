"""Planted-truth models: the measured two-player Shapley share equals the closed form on every sample."""
import numpy as np
import pytest

from tasks.adapters.contract import ModelSpec
from tasks.adapters.registry import get_adapter
from tasks.adapters.zoo import planted
from tasks.data.synthetic import make_synthetic
from tasks.diagnostics.run import diagnose

SAMPLES = make_synthetic(16, seed=0)


@pytest.mark.parametrize("variant", planted.VARIANTS)
def test_measured_share_is_the_closed_form(variant):
    model = get_adapter("planted").load(ModelSpec(name=variant, adapter="planted", source=variant))
    measured = diagnose(model, SAMPLES).per_sample["modality_shapley_v"].to_numpy()
    truth = [planted.closed_form_share(variant, planted.image_feature(s.image), planted.text_feature(s.caption), s.sample_id)
             for s in SAMPLES]
    assert measured == pytest.approx(truth, abs=1e-6)


def test_mixed_uses_each_modality_on_some_samples_and_unknown_variants_fail():
    switches = {planted.uses_image(s.sample_id) for s in SAMPLES}
    assert switches == {True, False}
    with pytest.raises(ValueError, match="unknown variant"):
        get_adapter("planted").load(ModelSpec(name="x", adapter="planted", source="quadratic"))
    assert np.isclose(planted.closed_form_share("constant", 0.3, 0.2), 0.9)
