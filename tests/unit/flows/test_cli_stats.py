"""``stats summarize``: real output on a CSV written here, the JSON it writes, and its error paths."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli_stats import app
from tasks.stats.analysis import analyze
from tasks.stats.table import load_scores

runner = CliRunner()
RESAMPLES = "999"  # fewer than the default 9999: same code path, faster test


@pytest.fixture(scope="module")
def scores_csv(tmp_path_factory):
    rng = np.random.default_rng(7)
    n = 25
    shares = {"txt[0]": rng.beta(2, 40, n), "even": 0.5 + rng.normal(0, 0.03, n), "img": rng.beta(40, 2, n)}
    rows = [(m, f"s{i}", "shapley", float(v), "extra") for m, vs in shares.items() for i, v in enumerate(vs)]
    path = tmp_path_factory.mktemp("cli") / "scores.csv"
    pd.DataFrame(rows, columns=["model", "sample_id", "metric", "value", "comment"]).to_csv(path, index=False)
    return path


def test_summarize_prints_both_tables_and_writes_json(scores_csv, tmp_path):
    out_json = tmp_path / "out" / "stats.json"
    plot = tmp_path / "forest.png"
    result = runner.invoke(app, ["summarize", str(scores_csv), "--json", str(out_json), "--resamples", RESAMPLES,
                                 "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    out = result.output
    for header in ("model", "metric", "CI95 (BCa)", "p (t)", "p (Wilcoxon)", "power", "verdict", "p Holm"):
        assert header in out
    assert "txt[0]" in out  # markup-like names are printed literally
    assert "collapsed (text)" in out and "collapsed (image)" in out and "balanced" in out
    assert "Holm (step-down Bonferroni" in out and "family of 3 pairwise comparison(s)" in out
    assert "txt[0] < img" in out
    assert "'not shown to differ' is not evidence of balance" in out

    doc = json.loads(out_json.read_text())
    ref = analyze(load_scores(scores_csv), n_resamples=999)
    assert [r["model"] for r in doc["per_model"]] == ["txt[0]", "even", "img"]
    assert doc["correction"]["method"] == "holm" and doc["correction"]["family_size"] == 3
    assert doc["params"]["n_resamples"] == 999 and doc["params"]["threshold"] == 0.8
    for got, want in zip(doc["per_model"], ref.per_model):
        assert got["summary"]["mean"] == pytest.approx(want.summary.mean, rel=1e-12)
        assert got["summary"]["ci_low"] == pytest.approx(want.summary.ci_low, rel=1e-12)
        assert got["summary"]["t_p"] == pytest.approx(want.summary.t_p, rel=1e-12)
        assert got["call"]["label"] == want.call.label
    for got, want in zip(doc["pairwise"], ref.pairwise):
        assert (got["model_a"], got["model_b"]) == (want.model_a, want.model_b)
        assert got["p_holm"] == pytest.approx(want.p_holm, rel=1e-12)
    # the printed mean of the text-heavy model is the JSON's, rounded
    assert f"{doc['per_model'][0]['summary']['mean']:.3f}" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_options_reach_the_analysis(scores_csv, tmp_path):
    out_json = tmp_path / "s.json"
    result = runner.invoke(app, ["summarize", str(scores_csv), "--json", str(out_json), "--resamples", "99",
                                 "--threshold", "0.99", "--margin", "0.001", "--alpha", "0.01"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out_json.read_text())
    assert doc["params"] == {"baseline": 0.5, "margin": 0.001, "alpha": 0.01, "threshold": 0.99,
                             "n_resamples": 99, "seed": 0}
    # nothing is beyond 0.99, and a 0.001 margin is too tight to show balance
    assert {r["call"]["label"] for r in doc["per_model"]} <= {"imbalanced", "not shown to differ"}
    assert "collapsed" not in result.output.split("verdicts:")[0]


def test_bad_table_exits_2_with_the_message_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,sample_id,metric,value\na,1,m,0.4\na,2,m,oops\n")
    result = runner.invoke(app, ["summarize", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: line 3 (data row 2), column 'value': 'oops' is not a number" in result.output
    assert "fix:" in result.output and "Traceback" not in result.output


def test_missing_file_and_bad_option_exit_2(tmp_path, scores_csv):
    result = runner.invoke(app, ["summarize", str(tmp_path / "none.csv")])
    assert result.exit_code == 2 and "none.csv: cannot read" in result.output
    result = runner.invoke(app, ["summarize", str(scores_csv), "--margin", "-1", "--resamples", "9"])
    assert result.exit_code == 2 and "margin -1.0 must be positive" in result.output
    assert "Traceback" not in result.output


def test_summarize_is_a_subcommand():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "summarize" in result.output
