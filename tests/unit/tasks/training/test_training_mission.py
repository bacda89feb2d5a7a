"""The training mission schema: the shipped mission loads; each kind of mistake is one clear MissionError."""
from pathlib import Path

import pytest
import yaml

from tasks.mission import MissionError
from tasks.training.config import TrainConfig, apply_deltas, parameters
from tasks.training.mission import load_training_mission, parse_training_mission

MISSION = Path(__file__).resolve().parents[4] / "missions" / "week2-mitigation.yaml"


def _data() -> dict:
    return yaml.safe_load(MISSION.read_text(encoding="utf-8"))


def _parse(data: dict):
    return parse_training_mission(yaml.safe_dump(data), "m.yaml")


def test_shipped_mission_loads_with_three_seeds_and_ablations():
    m = load_training_mission(MISSION)
    assert m.kind == "training" and len(m.seeds) >= 3
    configs = m.configs()
    assert list(configs)[0] == m.baseline.name and len(configs) == len(m.variants) + 1
    lambdas = {c.loss.lambda_visual for c in configs.values()}
    assert {0.1, 0.3, 0.5} <= lambdas
    assert configs["ogm-ge"].modulation.method == "ogm_ge"


@pytest.mark.parametrize("edit, words", [
    (lambda d: d["variants"][0]["deltas"][0].update(parameter="loss.lambda_vision"), "unknown parameter 'loss.lambda_vision'"),
    (lambda d: d["variants"][0]["deltas"][0].update(baseline=0.2), "is not the baseline config's 0.0"),
    (lambda d: d["variants"][0]["deltas"][0].update(new=0.0), "a delta must change something"),
    (lambda d: d["variants"][0]["deltas"][0].update(new=-1.0), "config is invalid"),
    (lambda d: d.update(seeds=[0, 1]), "seeds"),
    (lambda d: d.update(seeds=[0, 0, 1]), "distinct"),
    (lambda d: d.update(metrics=["attn_visual_share"]), "cannot be re-diagnosed"),
    (lambda d: d["budget"].update(max_training_runs=3), "exceed budget.max_training_runs 3"),
    (lambda d: d["decisions"].pop("PARTIAL"), "PARTIAL"),
    (lambda d: d["baseline"]["config"]["model"].update(fusion_depth=9), "fusion_depth 9 exceeds model.layers"),
    (lambda d: d.update(colour="red"), "unknown key"),
])
def test_bad_mission_is_one_message_naming_the_field(edit, words):
    data = _data()
    edit(data)
    with pytest.raises(MissionError) as err:
        _parse(data)
    assert words in str(err.value) and str(err.value).startswith("m.yaml: ")


def test_missing_file_and_bad_yaml():
    with pytest.raises(MissionError, match="mission file not found"):
        load_training_mission("no/such.yaml")
    with pytest.raises(MissionError, match="not valid YAML at line"):
        parse_training_mission("kind: training\nid: [", "m.yaml")


def test_apply_deltas_revalidates_and_names_parameters():
    base = TrainConfig()
    assert apply_deltas(base, {"model.fusion_depth": 2}).model.fusion_depth == 2
    assert "loss.lambda_visual" in parameters() and "recipe.log_every" in parameters()
    with pytest.raises(KeyError, match="unknown parameter"):
        apply_deltas(base, {"nope.x": 1})
