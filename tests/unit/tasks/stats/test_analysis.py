"""``analyze`` against direct calls, and the forest plot of its per-model frame.

Reference values are tasks.stats / scipy / statsmodels called directly on the
same vectors.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from tasks.stats import comparisons, per_model
from tasks.stats.analysis import Analysis, analyze
from tasks.stats.figures import forest_figure, forest_plot
from tasks.stats.reliance import reliance
from tasks.stats.table import REQUIRED_COLUMNS, ScoresTableError


# ---------------------------------------------------------------- analyze

RNG = np.random.default_rng(2024)
N = 30
SHARES = {  # model -> per-sample visual share
    "text-heavy": RNG.beta(2, 30, N),
    "balanced": np.clip(0.5 + RNG.normal(0, 0.04, N), 0, 1),
    "image-heavy": RNG.beta(30, 2, N),
}
OTHER = {"balanced": np.clip(0.5 + RNG.normal(0.02, 0.1, N), 0, 1), "image-heavy": RNG.beta(9, 3, N)}


def _table() -> pd.DataFrame:
    rows = [(m, f"s{i:02d}", "shapley", float(v)) for m, vs in SHARES.items() for i, v in enumerate(vs)]
    rows += [(m, f"s{i:02d}", "ablation", float(v)) for m, vs in OTHER.items() for i, v in enumerate(vs)]
    return pd.DataFrame(rows, columns=list(REQUIRED_COLUMNS))


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return analyze(_table(), n_resamples=999, seed=3)


def test_analyze_per_model_equals_direct_calls(analysis):
    assert [(r.model, r.metric) for r in analysis.per_model] == [
        ("text-heavy", "shapley"), ("balanced", "shapley"), ("image-heavy", "shapley"),
        ("balanced", "ablation"), ("image-heavy", "ablation")]
    for r in analysis.per_model:
        x = (SHARES if r.metric == "shapley" else OTHER)[r.model]
        ref = per_model.summarize(x, baseline=0.5, n_resamples=999, seed=3)
        assert r.summary == ref
        # every model is a subject by default: the collapse p is Holm-corrected across the metric's models
        rel = reliance(x, threshold=0.8, margin=0.05, alpha=0.05, n_resamples=999, seed=3)
        family = {m: per_model.summarize(v, n_resamples=999, seed=3).t_p
                  for m, v in (SHARES if r.metric == "shapley" else OTHER).items()}
        p_holm = dict(zip(family, multipletests(list(family.values()), method="holm")[1]))[r.model]
        assert r.reliance == rel and r.subject
        assert r.verdict == per_model.collapse_verdict(ref, threshold=0.8, alpha=0.05, reliance=rel, p_holm=p_holm)
        assert r.equivalence == per_model.tost(x, baseline=0.5, margin=0.05, alpha=0.05)
    labels = {(r.model, r.metric): r.call.label for r in analysis.per_model}
    assert labels[("text-heavy", "shapley")] == "collapsed"
    assert labels[("image-heavy", "shapley")] == "collapsed"
    assert labels[("balanced", "shapley")] == "balanced"


def test_analyze_pairwise_equals_direct_calls_and_holm(analysis):
    pairs = [(r.metric, r.model_a, r.model_b) for r in analysis.pairwise]
    assert pairs == [("shapley", "text-heavy", "balanced"), ("shapley", "text-heavy", "image-heavy"),
                     ("shapley", "balanced", "image-heavy"), ("ablation", "balanced", "image-heavy")]
    for r in analysis.pairwise:
        src = SHARES if r.metric == "shapley" else OTHER
        ref = comparisons.paired_comparison(src[r.model_a], src[r.model_b], n_resamples=999, seed=3)
        assert r.comparison == ref
    raw = [r.comparison.t_p for r in analysis.pairwise]
    ref_adj = multipletests(raw, method="holm")[1]
    assert [r.p_holm for r in analysis.pairwise] == pytest.approx(list(ref_adj), rel=1e-12)
    assert [r.p_holm_perm for r in analysis.pairwise] == pytest.approx(
        list(multipletests([r.comparison.perm_p for r in analysis.pairwise], method="holm")[1]), rel=1e-12)
    assert analysis.family_size == 4 and analysis.correction_method == "holm"
    assert "Holm" in analysis.correction
    by_pair = {(r.metric, r.model_a, r.model_b): r.label for r in analysis.pairwise}
    assert by_pair[("shapley", "text-heavy", "image-heavy")] == "text-heavy < image-heavy"


def test_analyze_pairs_on_common_sample_ids_only():
    table = _table()
    # drop two samples of one model and shuffle the rows: pairing is by id, not position
    table = table.drop(index=table.index[(table["model"] == "balanced") & table["sample_id"].isin(["s00", "s07"])])
    table = table.sample(frac=1.0, random_state=0)
    result = analyze(table, n_resamples=999, seed=3)
    r = next(p for p in result.pairwise if (p.metric, p.model_a, p.model_b) == ("shapley", "text-heavy", "balanced"))
    keep = [i for i in range(N) if i not in (0, 7)]
    ref = comparisons.paired_comparison(SHARES["text-heavy"][keep], SHARES["balanced"][keep], n_resamples=999, seed=3)
    assert r.comparison == ref and (r.n_only_a, r.n_only_b) == (2, 0)
    assert any("28 common sample_ids (2 only in text-heavy" in n for n in result.notes)


def test_row_order_of_the_table_changes_nothing(analysis):
    shuffled = analyze(_table().sample(frac=1.0, random_state=1), n_resamples=999, seed=3)
    a, b = analysis.per_model_frame(), shuffled.per_model_frame()
    b = b.set_index(["model", "metric"]).loc[a.set_index(["model", "metric"]).index].reset_index()
    num = a.select_dtypes("number").columns
    np.testing.assert_allclose(b[num].to_numpy(float), a[num].to_numpy(float), rtol=1e-9, equal_nan=True)
    assert (a["label"] == b["label"]).all()


def test_frames_and_json(analysis):
    pm = analysis.per_model_frame()
    assert len(pm) == 5 and {"model", "metric", "mean", "ci_low", "ci_high", "t_p", "wilcoxon_p", "cohen_d",
                             "power", "n_for_80_power", "tost_p", "verdict_collapsed", "label", "reason"} <= set(pm.columns)
    pw = analysis.pairwise_frame()
    assert len(pw) == 4 and {"p_holm", "reject_holm", "perm_p", "label", "n_only_a"} <= set(pw.columns)
    doc = analysis.to_json_dict()
    text = json.dumps(doc, allow_nan=False)  # NaN must already be null
    back = json.loads(text)
    assert back["correction"]["method"] == "holm" and back["correction"]["family_size"] == 4
    assert back["params"] == {"baseline": 0.5, "margin": 0.05, "alpha": 0.05, "threshold": 0.8,
                              "n_resamples": 999, "seed": 3}
    first = back["per_model"][0]
    assert first["summary"]["mean"] == pytest.approx(SHARES["text-heavy"].mean(), rel=1e-12)
    assert first["call"]["label"] == "collapsed" and first["verdict"]["collapsed"] is True
    assert back["pairwise"][0]["p_holm"] == pytest.approx(analysis.pairwise[0].p_holm, rel=1e-12)
    metrics = analysis.as_dict("stats/")
    assert metrics["stats/shapley/text-heavy/mean"] == pytest.approx(SHARES["text-heavy"].mean())
    assert metrics["stats/shapley/text-heavy_vs_image-heavy/p_holm"] == analysis.pairwise[1].p_holm
    assert all(isinstance(v, (int, float)) for v in metrics.values())


def test_json_nan_becomes_null_and_degenerate_models_do_not_crash():
    table = pd.DataFrame({"model": ["a", "a", "b", "b", "c"], "sample_id": ["1", "2", "1", "2", "9"],
                          "metric": ["m"] * 5, "value": [0.7, 0.7, 0.2, 0.6, 0.5]})
    result = analyze(table, n_resamples=99)
    doc = json.loads(json.dumps(result.to_json_dict(), allow_nan=False))
    a = doc["per_model"][0]
    # zero variance (0.7, 0.7): no t-test, but the exact sign test decides (n = 2 cannot reach alpha)
    assert a["summary"]["t_p"] is None and a["verdict"]["test"] == per_model.SIGN_TEST
    assert a["verdict"]["p"] == pytest.approx(0.5) and a["call"]["label"] == "not shown to differ"
    ac = next(p for p in doc["pairwise"] if (p["model_a"], p["model_b"]) == ("a", "c"))
    assert ac["comparison"]["n"] == 0 and ac["label"] == "not testable" and ac["p_holm"] is None


def test_baseline_other_than_half_skips_collapse_and_bad_params_raise():
    result = analyze(_table(), baseline=0.4, n_resamples=99)
    assert all(r.verdict is None for r in result.per_model)
    assert any("collapse verdicts" in n for n in result.notes)
    assert math.isnan(result.per_model_frame()["verdict_share"].iloc[0])
    for bad in ({"margin": 0}, {"alpha": 1.5}, {"threshold": 0.4}, {"baseline": float("nan")}):
        with pytest.raises(ValueError, match="must"):
            analyze(_table(), **bad)
    with pytest.raises(ScoresTableError, match="missing column"):
        analyze(pd.DataFrame({"model": ["a"]}))


# ---------------------------------------------------------------- forest plot


def test_forest_plot_marks_baseline_and_thresholds(analysis, tmp_path):
    frame = analysis.per_model_frame()
    fig = forest_figure(frame, threshold=0.8, baseline=0.5)
    ax = fig.axes[0]
    verticals = sorted({round(line.get_xdata()[0], 12) for line in ax.lines
                        if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2
                        and tuple(line.get_ydata()) == (0, 1)})
    assert verticals == [0.2, 0.5, 0.8]
    ticks = dict(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels())))
    assert ticks[4] == "text-heavy · shapley" and ticks[0] == "image-heavy · ablation"  # first row on top
    # each row's CI segment spans exactly (ci_low, ci_high)
    segments = [tuple(line.get_xdata()) for line in ax.lines if len(line.get_xdata()) == 2
                and tuple(line.get_ydata()) != (0, 1)]
    assert (frame["ci_low"].iloc[0], frame["ci_high"].iloc[0]) in segments
    path = forest_plot(frame, 0.8, 0.5, tmp_path / "plots" / "forest.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="lacks column"):
        forest_figure(frame.drop(columns=["ci_low"]), 0.8, 0.5)
