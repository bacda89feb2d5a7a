"""The probing mission end to end through the CLI: Prefect's local API, MLflow on SQLite, the real tiny models."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.quality_officer import assess
from flows.cli import app
from tasks import evidence

pytestmark = pytest.mark.slow
MISSION = Path(__file__).resolve().parents[2] / "missions" / "p4-spatial-probing.yaml"


@pytest.fixture(scope="module")
def cycle(prefect_api):
    result = CliRunner().invoke(app, ["cycle", "run", "--mission", str(MISSION), "--allow-random-init"])
    assert result.exit_code == 0, result.output
    handoff = Path(re.search(r"Handoff: (\S+)", result.output).group(1))
    return result.output, handoff


def test_cycle_completes_with_a_verified_handoff(cycle):
    output, handoff = cycle
    assert "5 actions completed, 0 blocked, 0 failed" in output and "handoff VERIFIED" in output
    assert assess([handoff]).verified


def test_planted_models_are_told_apart_and_controls_never_selected(cycle):
    _, handoff = cycle
    text = handoff.read_text()
    assert "the planted models are told apart" in text
    row = lambda name: next(line for line in text.splitlines() if line.startswith(f"| `{name}` | calibration"))  # noqa: E731
    assert row("zoo-spatial-keeps").count("**PASS**") == 4
    assert row("zoo-spatial-destroys").count("**FAIL**") == 4
    assert "**No candidate selected.**" in text  # every measured model is a control
    for name in ("llava-next-7b", "internvl2-8b", "qwen2.5-vl-7b"):
        assert re.search(rf"\| `{re.escape(name)}` \| random-init \(RANDOM-INIT\) \| \*\*Completed\*\*\[\^e\d+\] \|", text)
    assert re.search(r"Model `cogvlm2-19b` is \*\*Blocked\*\*", text)


def test_layer_curves_and_cka_heatmaps_are_drawn_and_logged(cycle):
    _, handoff = cycle
    results = handoff.parent.parent / "results"
    for name in ("zoo-spatial-keeps", "llava-next-7b"):
        assert (results / f"{name}_probe_curves.png").stat().st_size > 1000
        assert (results / f"{name}_cka.png").stat().st_size > 1000
    run_id = re.search(r"MLflow cycle run `([0-9a-f]{32})`", handoff.read_text()).group(1)
    decision = evidence.read_run(run_id).child("fa.action_id", "P5")
    assert decision.m("calibration_separated").value == 1 and decision.tags["fa.selected"] == "none"
