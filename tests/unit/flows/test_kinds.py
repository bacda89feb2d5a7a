"""Mission kinds: the YAML's ``kind`` picks loader and flow; bad kinds and bad training missions exit 2 with one message."""
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.kinds import KINDS, kind_of
from tasks.mission import MissionError

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


def test_kinds_resolve_to_their_loader_and_flow():
    assert kind_of(ROOT / "missions" / "week1.yaml").name == "week1"
    training = kind_of(ROOT / "missions" / "week2-mitigation.yaml")
    assert training.name == "training"
    assert training.load()(str(ROOT / "missions" / "week2-mitigation.yaml")).kind == "training"
    assert all(k.loader.count(":") == 1 and k.flow.count(":") == 1 for k in KINDS.values())


def test_week1_mission_accepts_its_kind_explicitly(tmp_path):
    from tasks.mission import load_mission

    data = yaml.safe_load((ROOT / "missions" / "week1.yaml").read_text(encoding="utf-8"))
    path = tmp_path / "w1.yaml"
    path.write_text(yaml.safe_dump({"kind": "week1", **data}), encoding="utf-8")
    assert load_mission(path).kind == "week1"


def test_unknown_kind_is_one_message(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("kind: probing-v9\nid: x\n", encoding="utf-8")
    with pytest.raises(MissionError, match="unknown mission kind 'probing-v9'"):
        kind_of(path)
    result = runner.invoke(app, ["cycle", "run", "--mission", str(path)])
    assert result.exit_code == 2 and "unknown mission kind" in result.output and "Traceback" not in result.output


def test_bad_training_mission_exits_2_before_anything_trains(tmp_path):
    data = yaml.safe_load((ROOT / "missions" / "week2-mitigation.yaml").read_text(encoding="utf-8"))
    data["variants"][0]["deltas"][0]["parameter"] = "loss.lambda_vision"
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = runner.invoke(app, ["cycle", "run", "--mission", str(path)])
    assert result.exit_code == 2 and "unknown parameter 'loss.lambda_vision'" in result.output
    assert "Traceback" not in result.output


def test_week1_only_options_are_refused_for_a_training_mission():
    result = runner.invoke(app, ["cycle", "run", "--mission", str(ROOT / "missions" / "week2-mitigation.yaml"),
                                 "--models", "zoo-balanced"])
    assert result.exit_code == 2 and "apply to week1 and probing missions" in result.output


def test_kind_defaults_to_week1_and_reads_probing():
    assert kind_of(ROOT / "missions" / "week1.yaml").name == "week1"
    probing = kind_of(ROOT / "missions" / "p4-spatial-probing.yaml")
    assert probing.name == "probing" and hasattr(probing.flow_fn(), "fn")  # a Prefect flow
    assert probing.load()(ROOT / "missions" / "p4-spatial-probing.yaml").id == "p4-spatial-probing"


def test_cli_rejects_a_bad_probing_mission_with_exit_2(tmp_path):
    text = (ROOT / "missions" / "p4-spatial-probing.yaml").read_text().replace("depth: 0.25, note: LLM layer 8", "note: LLM layer 8", 1)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["cycle", "run", "--mission", str(path)])
    assert result.exit_code == 2
    assert "give 'depth'" in result.output and "Traceback" not in result.output


def test_cli_rejects_week1_only_options_on_a_probing_mission():
    result = CliRunner().invoke(app, ["cycle", "run", "--mission", str(ROOT / "missions" / "p4-spatial-probing.yaml"), "--next"])
    assert result.exit_code == 2 and "apply to week1 missions" in result.output
