"""Probe metrics on known answers, and the control task's behaviour."""
from __future__ import annotations

import numpy as np

from tasks.probing.probes import (average_precision, box_iou, box_profile, fit_point, mask_iou, mean_ci, occupancy,
                                  profile_box, summarise)


def test_box_iou_and_profiles_round_trip():
    a = np.array([[0.0, 0.0, 0.5, 0.5], [0.2, 0.2, 0.4, 0.4]])
    b = np.array([[0.0, 0.0, 0.5, 0.5], [0.3, 0.2, 0.5, 0.4]])
    assert np.allclose(box_iou(a, b), [1.0, 1 / 3])
    boxes = np.array([[0.1, 0.25, 0.6, 0.9], [0.0, 0.0, 1.0, 1.0]])
    assert np.allclose(profile_box(box_profile(boxes)), boxes, atol=1e-3)  # centroids of partly covered bins


def test_occupancy_mask_iou_and_empty_rows():
    occ = occupancy(np.array([[0.0, 0.0, 0.5, 0.5], [np.nan] * 4]), grid=2)
    assert np.allclose(occ, [[1, 0, 0, 0], [0, 0, 0, 0]])
    assert np.allclose(mask_iou(np.array([[0.9, 0.9, 0, 0]]), np.array([[1.0, 0, 0, 0]])), [0.5])


def test_average_precision_known_cases():
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([True, True, False]), 2) == 1.0
    # interpolated: the precision at recall 1/2 is the best at any higher recall (2/3), as VOC and COCO do
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([False, True, True]), 2) == np.float64(2 / 3)
    assert np.isnan(average_precision(np.array([0.5]), np.array([False]), 0))


def test_mean_ci_covers_the_mean_and_handles_constants():
    est = mean_ci(np.random.default_rng(0).normal(0.4, 0.1, 80), 999, 0.05)
    assert est.ci_low < est.value < est.ci_high
    same = mean_ci(np.ones(10), 999, 0.05)
    assert same.value == same.ci_low == same.ci_high == 1


def _planted(n: int, informative: bool, seed: int = 0):
    """Features that are a noisy linear code of the box (informative) or pure noise."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.2, 0.8, (n, 2))
    half = rng.uniform(0.08, 0.15, (n, 1))
    boxes = np.hstack([centre - half, centre + half])
    boxes[rng.random(n) < 0.2] = np.nan
    code = np.nan_to_num(np.hstack([box_profile(boxes), occupancy(boxes, 8)]))
    x = code @ rng.normal(size=(code.shape[1], 96)) if informative else rng.normal(size=(n, 96))
    return x + 0.05 * rng.normal(size=x.shape), boxes


def test_probes_find_planted_information_and_controls_stay_at_chance():
    x, boxes = _planted(300, informative=True)
    train, test = np.arange(150), np.arange(150, 300)
    real = fit_point(x, boxes, train, test, 8, ("box", "presence", "position"))
    control = fit_point(x, boxes, train, test, 8, ("box", "presence", "position"), control="shuffled_targets")
    s = summarise(real, control, 999, 0.05)
    assert s["bbox_iou"] > 0.7 and s["spatial_iou"] > 0.6 and s["map50"] > 0.7 and s["position_accuracy"] > 0.6
    assert abs(s["position_accuracy/control"] - s["position_accuracy/chance"]) < 0.15
    assert abs(s["bbox_iou/control"] - s["bbox_iou/chance"]) < 0.1
    assert s["position_selectivity/ci_low"] > 0.3


def test_probes_on_noise_find_nothing():
    x, boxes = _planted(300, informative=False)
    train, test = np.arange(150), np.arange(150, 300)
    real = fit_point(x, boxes, train, test, 8, ("box", "presence", "position"))
    control = fit_point(x, boxes, train, test, 8, ("box", "presence", "position"), control="random_features")
    s = summarise(real, control, 999, 0.05)
    assert s["bbox_iou"] < 0.35 and s["spatial_iou"] < 0.3 and s["position_selectivity/ci_low"] < 0.1
