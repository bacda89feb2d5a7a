"""Scores tables: the loader's error messages, a fuzz test, and ``analyze`` against direct calls.

Reference values are tasks.stats / scipy / statsmodels called directly on the
same vectors; the loader's messages are checked for the file, the place and
the fix.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from tasks import stats
from tasks.reliance import reliance
from tasks.scores_table import (
    REQUIRED_COLUMNS,
    Analysis,
    ScoresTableError,
    analyze,
    load_scores,
    parse_scores_csv,
    validate_scores,
)
from tasks.stats_plots import forest_figure, forest_plot

HEADER = "model,sample_id,metric,value\n"


def _write(tmp_path: Path, text: str | bytes, name: str = "scores.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


# ---------------------------------------------------------------- loading


def test_load_valid_table_ignores_extra_columns_and_strips(tmp_path):
    path = _write(tmp_path, "note,model,sample_id,metric,value\n"
                            "x, clip ,01,share,0.25\n"
                            "y,clip,02,share, 0.75 \n"
                            "\n"
                            "z,blip,01,share,1e-1\n")
    df = load_scores(path)
    assert list(df.columns) == list(REQUIRED_COLUMNS)
    assert df["model"].tolist() == ["clip", "clip", "blip"]
    assert df["sample_id"].tolist() == ["01", "02", "01"]  # ids stay text: "01" is not 1
    assert df["value"].tolist() == [0.25, 0.75, 0.1] and df["value"].dtype == np.float64


def test_utf8_bom_and_crlf_are_accepted(tmp_path):
    path = _write(tmp_path, b"\xef\xbb\xbfmodel,sample_id,metric,value\r\na,1,m,0.5\r\n")
    assert load_scores(path)["value"].tolist() == [0.5]


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", ["scores.csv", "empty", "fix:"]),
        ("   \n\n", ["empty", "fix:"]),
        ("model,sample,metric,value\na,1,m,0.5\n", ["line 1", "missing column(s) ['sample_id']", "fix:"]),
        ("Model,sample_id,metric,value\na,1,m,0.5\n", ["'Model' -> 'model'"]),
        (HEADER, ["no data rows", "fix:"]),
        (HEADER + "a,1,m,0.5\na,2,m,high\n", ["line 3 (data row 2)", "column 'value'", "'high' is not a number", "fix:"]),
        (HEADER + "a,1,m,0.5\na,2,m,\n", ["line 3", "column 'value'", "is empty"]),
        (HEADER + "a,1,m,inf\n", ["line 2", "'inf' is not finite"]),
        (HEADER + "a,1,m,NaN\na,2,m,nan\n", ["line 2", "'NaN' is not finite", "2 such row(s)"]),
        (HEADER + "a,1,m,0.5\n,2,m,0.5\n", ["line 3", "column 'model'", "empty model"]),
        (HEADER + "a,1,m,0.5\nb,1,m,0.4\na,1,m,0.6\n",
         ["line 2 (data row 1) and line 4 (data row 3)", "duplicated (model, sample_id, metric) = ('a', '1', 'm')", "fix:"]),
        (HEADER + "a,1,m,0.5,extra\n", ["not a well-formed CSV", "Expected 4 fields", "fix:"]),
        (HEADER + 'a,"1,m,0.5\n', ["not a well-formed CSV", "fix:"]),
        ("model,model,sample_id,metric,value\na,a,1,m,0.5\n", ["appear more than once", "['model']"]),
        (HEADER + "a,1,m,0.5\x00\n", ["line 2", "NUL"]),
        # a quoted field spanning two lines: the record starts on line 3
        (HEADER + 'a,1,m,0.5\na,"x\ny",m,bad\n', ["line 3 (data row 2)", "'bad' is not a number"]),
    ],
)
def test_bad_tables_name_file_place_and_fix(tmp_path, content, expected):
    path = _write(tmp_path, content)
    with pytest.raises(ScoresTableError) as info:
        load_scores(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for part in expected:
        assert part in message, (part, message)


def test_non_utf8_bytes_name_the_line_and_the_fix(tmp_path):
    path = _write(tmp_path, HEADER.encode() + b"a,1,m,0.5\nb\xe9,1,m,0.5\n")
    with pytest.raises(ScoresTableError, match=r"line 3: byte 0xe9 at offset 40 is not UTF-8; fix: save the file as UTF-8"):
        load_scores(path)


def test_missing_file_is_a_scores_table_error(tmp_path):
    with pytest.raises(ScoresTableError, match="no-such.csv: cannot read"):
        load_scores(tmp_path / "no-such.csv")
    with pytest.raises(ScoresTableError, match="cannot read"):
        load_scores(tmp_path)  # a directory


def test_validate_frame_input_names_rows_by_position():
    frame = pd.DataFrame({"model": ["a", "a"], "sample_id": [1, 2], "metric": ["m", "m"], "value": [0.5, np.nan]})
    with pytest.raises(ScoresTableError, match=r"<scores frame>: data row 2, column 'value'"):
        validate_scores(frame)
    ok = validate_scores(frame.iloc[:1])
    assert ok["sample_id"].tolist() == ["1"] and ok["value"].tolist() == [0.5]


def _check_valid(df: pd.DataFrame) -> None:
    assert list(df.columns) == list(REQUIRED_COLUMNS) and len(df) > 0
    assert np.isfinite(df["value"].to_numpy(dtype=float)).all()
    assert not df.duplicated(subset=["model", "sample_id", "metric"]).any()
    assert (df[["model", "sample_id", "metric"]] != "").all().all()


_FUZZ_DIR = Path(tempfile.mkdtemp(prefix="scores-fuzz-"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_give_a_frame_or_a_scores_table_error(raw):
    path = _FUZZ_DIR / "fuzz.csv"
    path.write_bytes(raw)
    try:
        df = load_scores(path)
    except ScoresTableError as exc:
        assert str(exc).startswith(str(path))
    else:
        _check_valid(df)


_cell = st.one_of(
    st.sampled_from(["a", "b", "1", "0.5", "nan", "inf", "", " ", '"', ",", "0.25", "-1e400", "x\ny", "\r"]),
    st.text(max_size=6),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
_header = st.one_of(
    st.just(list(REQUIRED_COLUMNS)),
    st.permutations(list(REQUIRED_COLUMNS) + ["extra"]),
    st.lists(st.sampled_from(list(REQUIRED_COLUMNS) + ["x", ""]), min_size=0, max_size=6),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_header, st.lists(st.lists(_cell, min_size=0, max_size=6), max_size=6), st.sampled_from([",", ";"]))
def test_fuzz_csv_text_gives_a_frame_or_a_scores_table_error(header, rows, sep):
    text = "\n".join(sep.join(line) for line in [header, *rows]) + "\n"
    try:
        df = parse_scores_csv(text, source="fuzz")
    except ScoresTableError as exc:
        assert str(exc).startswith("fuzz: ")
    else:
        _check_valid(df)


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
        ref = stats.summarize(x, baseline=0.5, n_resamples=999, seed=3)
        assert r.summary == ref
        # every model is a subject by default: the collapse p is Holm-corrected across the metric's models
        rel = reliance(x, threshold=0.8, margin=0.05, alpha=0.05, n_resamples=999, seed=3)
        family = {m: stats.summarize(v, n_resamples=999, seed=3).t_p
                  for m, v in (SHARES if r.metric == "shapley" else OTHER).items()}
        p_holm = dict(zip(family, multipletests(list(family.values()), method="holm")[1]))[r.model]
        assert r.reliance == rel and r.subject
        assert r.verdict == stats.collapse_verdict(ref, threshold=0.8, alpha=0.05, reliance=rel, p_holm=p_holm)
        assert r.equivalence == stats.tost(x, baseline=0.5, margin=0.05, alpha=0.05)
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
        ref = stats.paired_comparison(src[r.model_a], src[r.model_b], n_resamples=999, seed=3)
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
    ref = stats.paired_comparison(SHARES["text-heavy"][keep], SHARES["balanced"][keep], n_resamples=999, seed=3)
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
    assert a["summary"]["t_p"] is None and a["verdict"]["test"] == stats.SIGN_TEST
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
