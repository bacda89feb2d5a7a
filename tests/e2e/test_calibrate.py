"""``calibrate`` end to end: the real zoo over three training seeds, Prefect's test API, MLflow on SQLite.

Trains nine zoo models (~10–40 s each on a CPU) into the session's home, so it is slow.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from agents.quality_officer import assess, verify_files
from tasks import evidence

pytestmark = pytest.mark.slow
SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def result(prefect_api):
    from flows.calibrate import calibrate

    state = calibrate(samples=32, seeds=SEEDS, permutations=[2, 8], mc_samples=2, mc_repeats=3, n_resamples=1999,
                      return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def _calls(result) -> pd.DataFrame:
    return evidence.read_table(result["run_id"], "calls.csv")


def test_report_verifies_against_the_evidence(result):
    report = Path(result["report"])
    assert report.name == "calibration_report.md" and report.parent.name == result["run_id"]
    assert result["verified"], result["findings"]
    findings, checked = verify_files([report])
    assert findings == [] and checked > 100
    assert assess([report]).verified
    assert (report.parent / "plots" / "metric_means.png").stat().st_size > 0
    assert (report.parent / "plots" / "mc_error.png").stat().st_size > 0


def test_one_child_run_per_model_and_seed(result):
    tree = evidence.read_run(result["run_id"])
    assert tree.name.startswith("calibration-")
    got = sorted((c.tags["fa.variant"], int(c.tags["fa.seed"])) for c in tree.children)
    assert got == sorted((v, s) for v in ("text_dominant", "balanced", "vision_dominant") for s in SEEDS)


@pytest.mark.parametrize("metric", ["modality_shapley_v", "ablation_visual_share"])
def test_two_player_shapley_and_ablation_separate_the_zoo_on_every_seed(result, metric):
    assert result["separates"][metric] and not result["wrong_way"][metric]
    calls = _calls(result)
    for seed in SEEDS:
        rows = calls[(calls["metric"] == metric) & (calls["seed"] == seed)].set_index("variant")
        text, bal, vision = (rows.loc[v] for v in ("text_dominant", "balanced", "vision_dominant"))
        assert text["ci_high"] < 0.2, (seed, text.to_dict())
        assert vision["ci_low"] > 0.8, (seed, vision.to_dict())
        assert 0.2 < bal["ci_low"] and bal["ci_high"] < 0.8, (seed, bal.to_dict())
        assert text["mean"] < bal["mean"] < vision["mean"]


def test_mm_shap_separates_the_extremes_on_every_seed(result):
    calls = _calls(result)
    mm = calls[calls["metric"] == "mm_shap_v"]
    assert (mm[mm["variant"] == "text_dominant"]["call"] == "text").all()
    assert (mm[mm["variant"] == "vision_dominant"]["call"] == "vision").all()
    assert not result["wrong_way"]["mm_shap_v"]


def test_report_says_which_metrics_separate_and_states_the_handoff_rule(result):
    text = Path(result["report"]).read_text()
    separating = [m for m, ok in result["separates"].items() if ok]
    line = next(line for line in text.splitlines() if line.startswith("- **Metrics that separate the zoo**"))
    assert all(f"`{m}`" in line for m in separating)
    assert "a verdict in a handoff uses a metric only where this calibration shows it separates" in text
    assert "## Where the balanced model lands under MM-SHAP, and why" in text


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0,x"], "--seeds '0,x': give comma-separated integers"),
    (["--permutations", "1,8"], "each count must be >= 2"),
    (["--samples", "4"], "samples=4: use at least 8"),
])
def test_cli_refuses_bad_options_with_one_message_and_exit_2(args, message):
    from typer.testing import CliRunner

    from flows.cli_calibrate import app

    out = CliRunner().invoke(app, args)
    assert out.exit_code == 2
    assert message in out.output and "Traceback" not in out.output
