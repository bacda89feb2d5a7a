"""Calibration arithmetic on hand-built frames with known answers."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from tasks.stats import calibration

N = 40


def _frame(means: dict[tuple[str, int], dict[str, float]], sd: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """Per-sample rows: for each (variant, seed) and metric, N values around the given mean."""
    rng = np.random.default_rng(seed)
    parts = []
    for (variant, train_seed), metrics in means.items():
        cols = {m: np.clip(mu + sd * rng.standard_normal(N), 0, 1) for m, mu in metrics.items()}
        parts.append(pd.DataFrame({"variant": variant, "seed": train_seed, "sample_id": [f"s{i}" for i in range(N)],
                                   **cols}))
    return pd.concat(parts, ignore_index=True)


# good: separates; reversed: points the wrong way; lax: balanced flagged on seed 1 and vision missed on seed 1
ZOO = {
    ("text_dominant", 0): {"good": 0.02, "reversed": 0.7, "lax": 0.05},
    ("balanced", 0): {"good": 0.5, "reversed": 0.5, "lax": 0.5},
    ("vision_dominant", 0): {"good": 0.97, "reversed": 0.3, "lax": 0.95},
    ("text_dominant", 1): {"good": 0.03, "reversed": 0.6, "lax": 0.05},
    ("balanced", 1): {"good": 0.45, "reversed": 0.5, "lax": 0.9},
    ("vision_dominant", 1): {"good": 0.96, "reversed": 0.4, "lax": 0.6},
}


@pytest.fixture(scope="module")
def calls():
    return calibration.metric_calls(_frame(ZOO), metrics=("good", "reversed", "lax"), n_resamples=999)


@pytest.mark.parametrize("low, high, call", [(0.01, 0.19, "text"), (0.81, 0.99, "vision"), (0.15, 0.25, "neither"),
                                             (0.75, 0.85, "neither"), (0.4, 0.6, "neither"),
                                             (math.nan, math.nan, "neither"), (0.2, 0.2, "neither")])
def test_call_from_ci_needs_the_whole_interval_beyond_the_threshold(low, high, call):
    assert calibration.call_from_ci(low, high, 0.8) == call


def test_call_from_ci_rejects_a_threshold_outside_the_upper_half():
    with pytest.raises(ValueError, match=r"threshold 0.3.*\(0.5, 1\)"):
        calibration.call_from_ci(0.1, 0.2, 0.3)


def test_calls_have_one_row_per_metric_model_and_seed(calls):
    assert len(calls) == 3 * 6
    good = calls[calls["metric"] == "good"].set_index(["variant", "seed"])
    assert good.loc[("text_dominant", 0), "call"] == "text"
    assert good.loc[("vision_dominant", 1), "call"] == "vision"
    assert good.loc[("balanced", 1), "call"] == "neither"
    row = good.loc[("text_dominant", 0)]
    assert row["n"] == N and row["ci_low"] < row["mean"] < row["ci_high"] < 0.2


def test_sensitivity_specificity_and_separation(calls):
    scores = calibration.metric_scores(calls).set_index("metric")
    assert scores.loc["good", ["sensitivity", "specificity"]].tolist() == [1.0, 1.0]
    assert bool(scores.loc["good", "separates"]) and not bool(scores.loc["good", "wrong_way"])
    assert scores.loc["good", "balanced_between"] == 1.0
    # lax: 3 of 4 dominant pairs flagged the right way (vision seed 1 at 0.6 is missed), 1 of 2 balanced flagged
    assert scores.loc["lax", "sensitivity"] == pytest.approx(0.75)
    assert scores.loc["lax", "specificity"] == pytest.approx(0.5)
    assert not bool(scores.loc["lax", "separates"])


def test_wrong_way_is_the_text_dominant_mean_above_the_vision_dominant_one(calls):
    scores = calibration.metric_scores(calls).set_index("metric")
    assert bool(scores.loc["reversed", "wrong_way"])
    assert scores.loc["reversed", "wrong_way_seeds"] == 2
    assert scores.loc["reversed", "sensitivity"] == 0.0
    assert scores.loc["reversed", "text_dominant_mean"] == pytest.approx(0.65, abs=0.01)
    assert scores.loc["good", "wrong_way_seeds"] == 0


def test_a_metric_missing_from_the_frame_is_never_called_and_never_separates():
    frame = _frame({k: {"good": v["good"]} for k, v in ZOO.items()})
    calls = calibration.metric_calls(frame, metrics=("good", "absent"), n_resamples=999)
    absent = calls[calls["metric"] == "absent"]
    assert (absent["n"] == 0).all() and (absent["call"] == "neither").all()
    scores = calibration.metric_scores(calls).set_index("metric")
    assert scores.loc["absent", "sensitivity"] == 0.0 and not bool(scores.loc["absent", "separates"])


def test_metric_calls_names_missing_columns():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['seed'\]"):
        calibration.metric_calls(pd.DataFrame({"variant": ["balanced"], "good": [0.5]}))


def test_agreement_is_spearman_per_model_and_pooled():
    rng = np.random.default_rng(3)
    x = rng.random(30)
    sign = np.r_[-np.ones(15), np.ones(15)]
    frame = pd.DataFrame({"variant": ["text_dominant"] * 15 + ["vision_dominant"] * 15, "seed": 0,
                          "a": x, "b": x**3, "c": sign * x, "d": 0.5})  # b: same ranks; c: reversed in one model
    frame.loc[0, "b"] = np.nan  # a NaN drops that sample from the pair only
    agree = calibration.agreement(frame, metrics=("a", "b", "c", "d")).set_index(["scope", "metric_a", "metric_b"])
    assert agree.loc[("pooled", "a", "b"), "rho"] == pytest.approx(1.0)
    assert agree.loc[("pooled", "a", "b"), "n"] == 29
    assert agree.loc[("text_dominant", "a", "c"), "rho"] == pytest.approx(-1.0)
    assert agree.loc[("vision_dominant", "a", "c"), "rho"] == pytest.approx(1.0)
    assert agree.loc[("pooled", "a", "c"), "rho"] == pytest.approx(scipy_stats.spearmanr(x, sign * x).statistic)
    assert math.isnan(agree.loc[("pooled", "a", "d"), "rho"])  # a constant metric has no ranks
    assert set(agree.index.get_level_values("scope")) == {"pooled", "text_dominant", "vision_dominant"}


def test_mc_error_reports_mean_se_and_the_spread_across_repeats():
    runs = pd.DataFrame({
        "variant": "balanced", "permutations": [4] * 4 + [2] * 4, "repeat": [0, 0, 1, 1] * 2,
        "sample_id": ["x", "y"] * 4,
        "mm_shap_v": [0.2, 0.4, 0.3, 0.4, 0.1, 0.5, 0.3, 0.5],
        "mm_shap_se": [0.05, 0.01, 0.03, 0.01, np.nan, np.nan, np.nan, np.nan],
    })
    errors = calibration.mc_error(runs).set_index("permutations")
    # p=4: SD over repeats is 0.0707 for x and 0 for y → mean 0.0354; mean SE 0.025
    assert errors.loc[4, "spread"] == pytest.approx(np.std([0.2, 0.3], ddof=1) / 2)
    assert errors.loc[4, "mean_se"] == pytest.approx(0.025)
    assert errors.loc[4, "n_samples"] == 2 and errors.loc[4, "n_repeats"] == 2
    assert math.isnan(errors.loc[2, "mean_se"])  # no SE from a single antithetic pair
    assert errors.loc[2, "spread"] == pytest.approx(np.std([0.1, 0.3], ddof=1) / 2)


def test_credit_concentration_of_one_pivotal_word_and_evenly_split_cells():
    c = calibration.credit_concentration(np.array([0.1, -0.1, 0.1, 0.1]), np.array([0.0, 1.2, -0.1, 0.1, 0.0, 0.0]))
    assert c["top_image_share"] == pytest.approx(0.25)
    assert c["top_text_share"] == pytest.approx(1.2 / 1.4)
    assert c["image_share"] == pytest.approx(0.4 / 1.8)
    assert (c["image_players"], c["text_players"]) == (4, 6)
    assert math.isnan(calibration.credit_concentration(np.zeros(4), np.ones(2))["top_image_share"])


def test_figures_draw_every_metric_panel(calls):
    fig = calibration.calls_figure(calls)
    assert [ax.get_title() for ax in fig.axes] == ["good", "reversed", "lax"]
    errors = calibration.mc_error(pd.DataFrame({"variant": "balanced", "permutations": [2, 2, 4, 4],
                                                "repeat": [0, 1, 0, 1], "sample_id": "x",
                                                "mm_shap_v": [0.1, 0.3, 0.2, 0.25], "mm_shap_se": [0.1, 0.1, 0.05, 0.05]}))
    ax = calibration.mc_error_figure(errors).axes[0]
    assert len(ax.lines) == 2 and list(ax.lines[0].get_xdata()) == [2, 4]
