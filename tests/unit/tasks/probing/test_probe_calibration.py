"""Calibration of the probes on the planted spatial zoo: found where position is, not where it was destroyed."""
from __future__ import annotations

import pytest
import torch

from tasks.adapters.contract import ModelSpec
from tasks.adapters.registry import get_adapter
from tasks.probing.decision import calibration_separated, judge
from tasks.probing.extract import extract
from tasks.probing.ground_truth import screening_set, split
from tasks.probing.mission import load_probing_mission
from tasks.probing.probes import fit_point, summarise
from pathlib import Path

MISSION = Path(__file__).resolve().parents[4] / "missions" / "p4-spatial-probing.yaml"

TARGETS = ("box", "presence", "position")


def _judged(seed: int, tmp_path, n: int = 320):
    mission = load_probing_mission(MISSION)
    data = screening_set(n, seed=0)
    train, test = split(n, 0.5, 0)
    rows, controls = [], []
    torch.set_num_threads(1)
    for variant in ("keeps", "destroys"):
        model = get_adapter("zoo-spatial").load(ModelSpec(f"z-{variant}", "zoo-spatial", variant,
                                                          random_init_config=(("seed", seed),)))
        features = extract(model, "zoo-spatial", f"z-{variant}", data.samples, ("lm.0", "lm.1"), "tokens", 64, 32,
                           data.content_hash, root=tmp_path)
        results = {}
        for key in ("lm.0", "lm.1"):
            x = features.load(key)
            real = fit_point(x, data.boxes(), train, test, 8, TARGETS)
            control = fit_point(x, data.boxes(), train, test, 8, TARGETS, control="shuffled_targets")
            results[key] = summarise(real, control, 999, 0.05, seed=seed)
            controls.append(results[key])
        rows.append(judge(f"z-{variant}", "calibration", results, ["lm.0", "lm.1"], mission.thresholds, "ci_low"))
    return rows, controls


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keeps_passes_and_destroys_fails_at_every_seed(seed, tmp_path):
    rows, controls = _judged(seed, tmp_path)
    keeps, destroys = rows
    assert keeps.passed_all, [(c.metric, c.value, c.judged) for c in keeps.cells]
    assert not destroys.passed_any, [(c.metric, c.value, c.judged) for c in destroys.cells]
    assert calibration_separated(rows, {"z-keeps": "keeps", "z-destroys": "destroys"}) is True
    for s in controls:  # control tasks stay near chance
        assert abs(s["position_accuracy/control"] - s["position_accuracy/chance"]) < 0.12
        assert abs(s["bbox_iou/control"] - s["bbox_iou/chance"]) < 0.05
        assert abs(s["presence_accuracy/control"] - s["presence_accuracy/chance"]) < 0.12
