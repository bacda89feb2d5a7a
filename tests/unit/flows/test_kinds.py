"""Mission kinds: the YAML's ``kind`` picks the loader and the flow; ``cycle run`` dispatches on it."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.kinds import KINDS, cycle_flow, kind_of, loader
from tasks.mission import MissionError

ROOT = Path(__file__).resolve().parents[3]


def test_each_kind_has_a_loader_and_a_flow():
    assert set(KINDS) >= {"week1", "probing"}
    for kind in KINDS:
        load, flow = loader(kind), cycle_flow(kind)
        assert callable(load) and hasattr(flow, "fn")  # a Prefect flow


def test_kind_defaults_to_week1_and_reads_probing():
    assert kind_of(ROOT / "missions" / "week1.yaml") == "week1"
    assert kind_of(ROOT / "missions" / "p4-spatial-probing.yaml") == "probing"
    load = loader("probing")
    assert load(ROOT / "missions" / "p4-spatial-probing.yaml").id == "p4-spatial-probing"


def test_unknown_kind_is_one_message(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("kind: training-v9\nid: x\n")
    with pytest.raises(MissionError, match="unknown mission kind 'training-v9': use one of"):
        kind_of(path)


def test_cli_rejects_a_bad_probing_mission_with_exit_2(tmp_path):
    text = (ROOT / "missions" / "p4-spatial-probing.yaml").read_text().replace("depth: 0.25, note: LLM layer 8", "note: LLM layer 8", 1)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["cycle", "run", "--mission", str(path)])
    assert result.exit_code == 2
    assert "give 'depth'" in result.output and "Traceback" not in result.output


def test_cli_rejects_week1_only_options_on_a_probing_mission():
    result = CliRunner().invoke(app, ["cycle", "run", "--mission", str(ROOT / "missions" / "p4-spatial-probing.yaml"), "--next"])
    assert result.exit_code == 2 and "apply to Week-1 missions" in result.output
