import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tasks.diagnostics.layers import depth_third, imbalance_finding, layer_profile


def _per_layer(shares: list[list[float]], metric: str = "attn_visual_share") -> pd.DataFrame:
    """shares[sample][layer] → the per_layer table diagnose() writes."""
    rows = [{"sample_id": f"s{s}", "layer": f"layer{i}", "layer_index": i, metric: v}
            for s, per_sample in enumerate(shares) for i, v in enumerate(per_sample)]
    return pd.DataFrame(rows)


def test_profile_mean_and_t_interval_by_hand():
    table = _per_layer([[0.2, 0.9], [0.4, 0.9], [0.6, 0.9]])
    profile = layer_profile(table, ("attn_visual_share",))
    first = profile.iloc[0]
    assert first["n"] == 3 and first["mean"] == pytest.approx(0.4) and first["sd"] == pytest.approx(0.2)
    half = stats.t.ppf(0.975, 2) * 0.2 / math.sqrt(3)  # 4.303 · 0.2 / √3 ≈ 0.497
    assert (first["ci_low"], first["ci_high"]) == pytest.approx((0.4 - half, 0.4 + half))
    second = profile.iloc[1]  # no spread: a zero-width interval, not NaN
    assert second["layer"] == "layer1" and (second["ci_low"], second["ci_high"]) == pytest.approx((0.9, 0.9))


def test_profile_skips_undefined_metrics_and_layers():
    table = _per_layer([[0.3, np.nan], [0.5, np.nan]])
    table["rollout_visual_share"] = np.nan  # e.g. a dual encoder: no rollout anywhere
    profile = layer_profile(table)
    assert profile["metric"].unique().tolist() == ["attn_visual_share"]
    assert profile["layer_index"].tolist() == [0]
    single = layer_profile(_per_layer([[0.3]]), ("attn_visual_share",))
    assert math.isnan(single.iloc[0]["ci_low"])  # one sample: no interval
    with pytest.raises(KeyError, match="no column"):
        layer_profile(table, ("relevance",))


def test_thirds_of_depth():
    assert [depth_third(i, 6) for i in range(6)] == ["early", "early", "middle", "middle", "late", "late"]
    assert [depth_third(i, 2) for i in range(2)] == ["early", "middle"]
    assert [depth_third(i, 4) for i in range(4)] == ["early", "early", "middle", "late"]


def test_imbalance_develops_late_toward_the_image():
    table = _per_layer([[0.5, 0.55, 0.6, 0.7, 0.85, 0.9]] * 2)
    finding = imbalance_finding(table, threshold=0.8)
    assert finding.third == "late" and finding.toward == "image"
    assert finding.third_imbalance == pytest.approx(0.875)
    assert finding.first_layer == 4 and finding.first_third == "late"
    assert str(finding) == ("attn_visual_share: imbalance is largest in the late third (layers 4–5 of 6; "
                            "mean 0.88, toward image); it first exceeds 0.80 at layer 4 (late third).")


def test_text_side_imbalance_that_never_crosses():
    table = _per_layer([[0.3, 0.45, 0.5], [0.3, 0.55, 0.5]])
    finding = imbalance_finding(table, threshold=0.8)
    assert finding.third == "early" and finding.toward == "text" and finding.first_layer is None
    assert finding.peak_layer == 0 and finding.peak_imbalance == pytest.approx(0.7)
    assert "never exceeds 0.80 (peak 0.70 at layer 0)" in finding.text


def test_depth_counts_layers_where_the_metric_is_undefined():
    # a model with 3 layers whose first is unimodal: the crossing at index 2 is in the late third
    table = _per_layer([[np.nan, 0.6, 0.95]])
    finding = imbalance_finding(table)
    assert finding.first_layer == 2 and finding.first_third == "late" and finding.third == "late"


def test_no_values_and_non_share_metrics():
    assert "no per-layer values" in imbalance_finding(_per_layer([[np.nan, np.nan]])).text
    with pytest.raises(ValueError, match="share metric"):
        imbalance_finding(_per_layer([[1.0]]), metric="attn_efficiency_ratio")
