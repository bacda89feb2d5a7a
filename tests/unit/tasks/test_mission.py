from pathlib import Path

import pytest

from tasks.mission import MissionError, load_mission, parse_mission

WEEK1 = Path(__file__).resolve().parents[3] / "missions" / "week1.yaml"
TEXT = WEEK1.read_text()


def test_week1_mission_loads_with_seven_actions_and_gates():
    m = load_mission(WEEK1)
    assert [a.id for a in m.actions] == ["T1", "T2", "T3", "T4", "T5", "T6", "T7"]
    assert sum(a.priority == "HIGH" for a in m.actions) == 4
    assert m.gates.min_models_tested == 3 and m.gates.min_models_collapsed == 2
    assert m.gates.imbalance_threshold == 0.8 and m.gates.alpha == 0.05
    assert m.model("openclip-vit-b-32").alternatives == ("openclip-vit-b-32-openai",)


@pytest.mark.parametrize("text, expected", [
    (TEXT.replace("deadline_hours: 24", "deadline_hours: soon", 1), "field 'actions.0.deadline_hours'"),
    (TEXT.replace("priority: HIGH", "priority: URGENT", 1), "field 'actions.0.priority'"),
    (TEXT.replace("  seed: 0", "  seed: 0\n  sead: 1"), "field 'dataset.sead': unknown key"),
    (TEXT.replace("depends_on: [T1, T2]", "depends_on: [T7]").replace("depends_on: [T3, T5]", "depends_on: [T4]"), "dependency cycle"),
    (TEXT.replace("depends_on: [T1, T2]", "depends_on: [T9]"), "unknown action 'T9'"),
    (TEXT.replace("alternatives: [openclip-vit-b-32-openai]", "alternatives: [nope]"), "unknown alternative 'nope'"),
    (TEXT.replace("imbalance_threshold: 0.80", "imbalance_threshold: 1.5"), "field 'gates.imbalance_threshold'"),
    ("id: x\n", "required field is missing"),
    ("models: [", "not valid YAML at line"),
    ("- a list\n", "a mission is a YAML mapping"),
])
def test_malformed_missions_fail_with_one_message_naming_the_field(text, expected):
    with pytest.raises(MissionError) as err:
        parse_mission(text, "m.yaml")
    assert expected in str(err.value)
    assert str(err.value).startswith("m.yaml: ")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(MissionError, match="mission file not found"):
        load_mission(tmp_path / "nope.yaml")


def test_criteria_are_checkable_predicates():
    c = load_mission(WEEK1).action("T5").acceptance[0]
    assert str(c) == "bib_entries >= 10"
    assert c.holds(12) and not c.holds(3) and not c.holds(None)


def test_runtime_defaults_and_checks():
    from tasks.mission import Runtime

    runtime = load_mission(Path(__file__).resolve().parents[3] / "missions" / "week1.yaml").runtime
    assert (runtime.device, runtime.dtype, runtime.batch_size) == ("auto", "auto", 32)
    assert Runtime(device="cuda:1", dtype="bfloat16", batch_size=256).device == "cuda:1"
    for bad in ({"device": "gpu"}, {"dtype": "fp8"}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            Runtime(**bad)
