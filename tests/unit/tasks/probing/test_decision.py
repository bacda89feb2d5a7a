"""The decision matrix, the selection rule and the calibration check."""
from __future__ import annotations

from tasks.probing.decision import calibration_separated, judge, select
from tasks.probing.mission import Threshold

T = (Threshold(metric="spatial_iou", op=">", value=0.6), Threshold(metric="bbox_iou", op=">", value=0.5))


def _res(s, s_low, b, b_low):
    return {"spatial_iou": s, "spatial_iou/ci_low": s_low, "bbox_iou": b, "bbox_iou/ci_low": b_low}


def test_best_decision_point_is_judged_on_its_ci_low():
    row = judge("m", "subject", {"L3": _res(0.7, 0.65, 0.6, 0.45), "L4": _res(0.65, 0.62, 0.58, 0.52), "L1": _res(0.99, 0.99, 0.9, 0.9)},
                ["L3", "L4"], T, "ci_low")
    assert row.cell("spatial_iou").point == "L3" and row.cell("spatial_iou").passed
    assert row.cell("bbox_iou").point == "L4" and row.cell("bbox_iou").passed  # L1 (vision) is not a decision point
    est = judge("m", "subject", {"L3": _res(0.7, 0.5, 0.6, 0.4)}, ["L3"], T, "estimate")
    assert est.passed_all and not judge("m", "subject", {"L3": _res(0.7, 0.5, 0.6, 0.4)}, ["L3"], T, "ci_low").passed_any


def test_selection_takes_only_passing_subjects_ranked():
    good = {"L": _res(0.8, 0.7, 0.7, 0.6)}
    better = {"L": _res(0.9, 0.8, 0.7, 0.6)}
    rows = [judge("a", "subject", good, ["L"], T, "ci_low"), judge("b", "subject", better, ["L"], T, "ci_low"),
            judge("c", "subject", {"L": _res(0.9, 0.8, 0.4, 0.3)}, ["L"], T, "ci_low"),
            judge("zoo", "calibration", better, ["L"], T, "ci_low"), judge("r", "random-init", better, ["L"], T, "ci_low")]
    assert [r.model for r in select(rows, 2, "spatial_iou", "all")] == ["b", "a"]
    assert [r.model for r in select(rows, 5, "spatial_iou", "any")] == ["b", "c", "a"]


def test_calibration_separated():
    keeps = judge("k", "calibration", {"L": _res(0.8, 0.7, 0.7, 0.6)}, ["L"], T, "ci_low")
    destroys = judge("d", "calibration", {"L": _res(0.1, 0.0, 0.2, 0.1)}, ["L"], T, "ci_low")
    planted = {"k": "keeps", "d": "destroys"}
    assert calibration_separated([keeps, destroys], planted) is True
    assert calibration_separated([keeps, judge("d", "calibration", {"L": _res(0.8, 0.7, 0.2, 0.1)}, ["L"], T, "ci_low")],
                                 planted) is False
    assert calibration_separated([], planted) is None
