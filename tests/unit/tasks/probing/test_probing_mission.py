"""The probing mission schema: the shipped mission loads, and each bad input is one message naming the field."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.mission import MissionError
from tasks.probing.mission import load_probing_mission, parse_probing_mission

MISSION = Path(__file__).resolve().parents[4] / "missions" / "p4-spatial-probing.yaml"


def _data() -> dict:
    return yaml.safe_load(MISSION.read_text())


def _error(data: dict) -> str:
    with pytest.raises(MissionError) as err:
        parse_probing_mission(yaml.safe_dump(data), "m.yaml")
    return str(err.value)


def test_the_p4_mission_names_the_architectures_with_their_points():
    m = load_probing_mission(MISSION)
    assert m.kind == "probing"
    adapters = {e.adapter for e in m.models}
    assert {"llava-next", "internvl", "cogvlm2", "qwen2.5-vl", "zoo-spatial"} <= adapters
    llava = m.model("llava-next-7b")
    assert [p.id for p in llava.points] == ["L1", "L2", "L3", "L4", "L5"]
    assert [llava.stage(p) for p in llava.points] == ["vision", "projector", "lm", "lm", "lm"]
    assert llava.points[2].layer(32) == 7 and llava.points[4].layer(32) == 31  # depth 0.25 → layer 8 of 32 (0-based 7)
    assert {m.model("zoo-spatial-keeps").planted, m.model("zoo-spatial-destroys").planted} == {"keeps", "destroys"}
    assert {t.metric: t.value for t in m.thresholds}["spatial_iou"] == 0.6
    assert m.selection.top == 2


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["models"][2]["points"].append({"id": "L9", "at": "merger"}), "not an extraction point of adapter 'llava-next'"),
    (lambda d: d["models"][2]["points"][2].pop("depth"), "give 'depth'"),
    (lambda d: d["models"][2]["points"].pop(0), "add the vision encoder output"),
    (lambda d: d["thresholds"].append({"metric": "spatial_iou", "op": ">", "value": "high"}), "field 'thresholds.4.value'"),
    (lambda d: d.update(targets=["box"]), "needs the 'presence' target"),
    (lambda d: d["models"][0].pop("planted"), "names what it plants"),
    (lambda d: d["models"][2].update(adapter="clip"), "has no probing extraction points"),
    (lambda d: d["data"].update(kind="coco"), "needs instances and images"),
    (lambda d: d.update(colour="red"), "field 'colour': unknown key"),
    (lambda d: d["actions"][1].update(depends_on=["P9"]), "unknown action 'P9'"),
])
def test_bad_input_is_one_message_naming_the_field(change, expected):
    data = _data()
    change(data)
    message = _error(data)
    assert expected in message and message.startswith("m.yaml: ") and "\n" not in message


def test_unreadable_yaml_and_missing_file(tmp_path):
    with pytest.raises(MissionError, match="not valid YAML at line"):
        parse_probing_mission("kind: probing\nmodels: [", "m.yaml")
    with pytest.raises(MissionError, match="mission file not found"):
        load_probing_mission(tmp_path / "nope.yaml")
