"""Linear probes for spatial information: trained on one split of images, scored on the other.

Per extraction point (features [n, d], pooled image-token states):

- **box**: ``RidgeCV`` from the features to the box's coverage of each of
  ``BOX_BINS`` columns and rows (a box is linear in these, not in its corner
  coordinates, which a linear read-out of token states fits poorly); the box is
  decoded without parameters (extent = summed coverage, centre = its centroid).
  **Bbox IoU** is the mean IoU of predicted and true boxes over the test images
  that show an object;
- **occupancy**: ``RidgeCV`` to the fraction of each cell of a grid × grid
  lattice the box covers; **Spatial IoU** is the mean IoU of the predicted and
  true occupancy masks (cells covered more than half) — a dense read-out that
  does not assume a box shape;
- **presence**: ``RidgeClassifierCV``, is there an object; **mAP@0.5** ranks
  every test image's box by the presence probe's decision value (one class, one object
  per image: a detection is correct when its image has the object and IoU ≥ 0.5;
  all-point interpolated average precision);
- **position**: ``RidgeClassifierCV`` over the 3 × 3 cell of the centre.

Regularisation is chosen per probe by efficient leave-one-out over a grid of
alphas (ridge; a cross-validated logistic regression gave the same read-out at
minutes per probe on thousands of features on a CPU).

Every probe has a control task (Hewitt & Liang 2019): the same probe trained
on the training images' targets shuffled among them (``shuffled_targets``) or
on Gaussian features of the same shape (``random_features``), scored on the
true test targets. Selectivity is the probe's score minus its control's; its
CI is a paired bootstrap over test images. Every CI is a bootstrap over test
images (BCa; percentile where BCa is undefined, e.g. a constant score).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import RidgeClassifierCV, RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from tasks.evidence import schema

ALPHAS = np.logspace(-2, 6, 17)
IOU_HIT = 0.5
BOX_BINS = 32


# ------------------------------------------------------------------ geometry

def box_iou(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """[n] IoU of row-aligned boxes (x0, y0, x1, y1)."""
    ix = np.clip(np.minimum(pred[:, 2], true[:, 2]) - np.maximum(pred[:, 0], true[:, 0]), 0, None)
    iy = np.clip(np.minimum(pred[:, 3], true[:, 3]) - np.maximum(pred[:, 1], true[:, 1]), 0, None)
    inter = ix * iy
    area = lambda b: np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # noqa: E731
    union = area(pred) + area(true) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def occupancy(boxes: np.ndarray, grid: int) -> np.ndarray:
    """[n, grid²] share of each cell (row-major) covered by the box; zeros for a NaN (empty) row."""
    edges = np.linspace(0, 1, grid + 1)
    lo, hi = edges[:-1], edges[1:]
    b = np.nan_to_num(boxes, nan=0.0)
    cover_x = np.clip(np.minimum(b[:, 2:3], hi) - np.maximum(b[:, 0:1], lo), 0, None) * grid  # [n, grid]
    cover_y = np.clip(np.minimum(b[:, 3:4], hi) - np.maximum(b[:, 1:2], lo), 0, None) * grid
    return (cover_y[:, :, None] * cover_x[:, None, :]).reshape(len(b), grid * grid)


def box_profile(boxes: np.ndarray, bins: int = BOX_BINS) -> np.ndarray:
    """[n, 2·bins]: the share of each column, then each row, that the box spans."""
    edges = np.linspace(0, 1, bins + 1)
    b = np.nan_to_num(boxes, nan=0.0)
    cols = np.clip(np.minimum(b[:, 2:3], edges[1:]) - np.maximum(b[:, 0:1], edges[:-1]), 0, None) * bins
    rows = np.clip(np.minimum(b[:, 3:4], edges[1:]) - np.maximum(b[:, 1:2], edges[:-1]), 0, None) * bins
    return np.concatenate([cols, rows], axis=1)


def profile_box(profile: np.ndarray, bins: int = BOX_BINS) -> np.ndarray:
    """The box a predicted profile describes: extent = summed coverage, centre = the coverage's centroid."""
    centres = (np.arange(bins) + 0.5) / bins
    ends = []
    for part in (profile[:, :bins], profile[:, bins:]):
        cover = np.clip(part, 0, 1)
        extent = cover.sum(1) / bins
        centre = (cover * centres).sum(1) / np.maximum(cover.sum(1), 1e-9)
        ends.append((centre - extent / 2, centre + extent / 2))
    (x0, x1), (y0, y1) = ends
    return np.clip(np.stack([x0, y0, x1, y1], axis=1), 0, 1)


def mask_iou(pred_occ: np.ndarray, true_occ: np.ndarray) -> np.ndarray:
    """[n] IoU of the cells covered more than half, predicted vs true (0 when both are empty)."""
    p, t = pred_occ > 0.5, true_occ > 0.5
    union = (p | t).sum(1)
    return np.where(union > 0, (p & t).sum(1) / np.maximum(union, 1), 0.0)


def average_precision(scores: np.ndarray, hit: np.ndarray, n_positive: int) -> float:
    """All-point interpolated AP of detections ranked by score; ``hit`` marks the correct ones."""
    if n_positive == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hit[order])
    precision = tp / np.arange(1, len(order) + 1)
    recall = tp / n_positive
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope))


# ------------------------------------------------------------------ probes

def _ridge():
    return make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS))


def _classifier():
    # Ridge read-out (efficient leave-one-out over the alphas): seconds where a cross-validated
    # logistic regression on thousands of features takes minutes on a CPU; a linear probe either way.
    return make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=ALPHAS))


@dataclass
class PointResult:
    """Per-image scores on the test images, for the probe and its control."""

    bbox_iou: np.ndarray            # test images with an object
    spatial_iou: np.ndarray
    map50: float
    det_scores: np.ndarray          # every test image: presence decision value, IoU of its box, has object
    det_iou: np.ndarray
    det_present: np.ndarray
    position_hit: np.ndarray | None = None   # test images with an object
    presence_hit: np.ndarray | None = None   # every test image
    chance: dict | None = None


def fit_point(x: np.ndarray, boxes: np.ndarray, train: np.ndarray, test: np.ndarray, grid: int, targets: tuple[str, ...],
              seed: int = 0, control: str | None = None) -> PointResult:
    """Train every probe on ``train`` images, score on ``test``; ``control`` trains the control task instead."""
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    present = ~np.isnan(boxes[:, 0])
    y_train_rows = train.copy()
    if control == "shuffled_targets":  # each training image gets another training image's targets
        y_train_rows = rng.permutation(train)
    elif control == "random_features":
        x = rng.standard_normal(x.shape)
    elif control is not None:
        raise ValueError(f"unknown control task {control!r}: use shuffled_targets or random_features")
    xtr, xte = x[train], x[test]
    occ = occupancy(boxes, grid)
    has_tr, has_te = present[y_train_rows], present[test]
    # One BLAS thread: the solves are on n × n Gram matrices, and on a shared CPU extra threads made
    # them ten times slower, not faster.
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        box_model = _ridge().fit(xtr[has_tr], box_profile(boxes[y_train_rows][has_tr]))
        pred = profile_box(box_model.predict(xte))
        true_te = np.nan_to_num(boxes[test], nan=0.0)
        iou_all = box_iou(pred, true_te)
        occ_pred = _ridge().fit(xtr, occ[y_train_rows]).predict(xte)
        spatial = mask_iou(occ_pred, occ[test])[has_te]
        presence_p = np.ones(len(test))
        presence_hit = None
        chance = {"bbox_iou": float(box_iou(np.tile(np.nanmean(boxes[train], 0), (has_te.sum(), 1)),
                                            true_te[has_te]).mean())}
        if "presence" in targets and len(np.unique(present[train])) == 2:
            clf = _classifier().fit(xtr, present[y_train_rows])
            presence_p = clf.decision_function(xte)  # ranks the detections; > 0 is "present"
            presence_hit = ((presence_p > 0) == has_te).astype(float)
            chance["presence_accuracy"] = float(max(has_te.mean(), 1 - has_te.mean()))
        position_hit = None
        if "position" in targets:
            pos = _positions(boxes)
            clf = _classifier().fit(xtr[has_tr], pos[y_train_rows][has_tr])
            position_hit = (clf.predict(xte[has_te]) == pos[test][has_te]).astype(float)
            counts = np.bincount(pos[test][has_te], minlength=9)
            chance["position_accuracy"] = float(counts.max() / max(counts.sum(), 1))
    hit = (iou_all >= IOU_HIT) & has_te
    return PointResult(bbox_iou=iou_all[has_te], spatial_iou=spatial, map50=average_precision(presence_p, hit, int(has_te.sum())),
                       det_scores=presence_p, det_iou=iou_all, det_present=has_te, position_hit=position_hit,
                       presence_hit=presence_hit, chance=chance)


def _positions(boxes: np.ndarray) -> np.ndarray:
    from tasks.probing.ground_truth import position_class

    return np.array([position_class(tuple(b)) if not np.isnan(b[0]) else -1 for b in boxes])


# ------------------------------------------------------------------ summaries with CIs

@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {prefix: self.value, schema.metric_field_key(prefix, "ci_low"): self.ci_low,
                schema.metric_field_key(prefix, "ci_high"): self.ci_high}


def mean_ci(values: np.ndarray, n_resamples: int, alpha: float, seed: int = 0) -> Estimate:
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        v = float(values.mean()) if len(values) else float("nan")
        return Estimate(v, float("nan"), float("nan"))
    if np.ptp(values) == 0:  # every image the same: no sampling spread to show
        v = float(values[0])
        return Estimate(v, v, v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=1 - alpha,
                              method="BCa", vectorized=True, rng=np.random.default_rng(seed))
        low, high = res.confidence_interval
        if not (np.isfinite(low) and np.isfinite(high)):
            res = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=1 - alpha,
                                  method="percentile", vectorized=True, rng=np.random.default_rng(seed))
            low, high = res.confidence_interval
    return Estimate(float(values.mean()), float(low), float(high))


def map_ci(r: PointResult, n_resamples: int, alpha: float, seed: int = 0) -> Estimate:
    """mAP@0.5 with a percentile bootstrap over test images (the AP is recomputed on each resample)."""
    rng = np.random.default_rng(seed)
    n = len(r.det_scores)
    hit = (r.det_iou >= IOU_HIT) & r.det_present
    values = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        ap = average_precision(r.det_scores[idx], hit[idx], int(r.det_present[idx].sum()))
        if np.isfinite(ap):
            values.append(ap)
    low, high = (np.quantile(values, [alpha / 2, 1 - alpha / 2]) if values else (float("nan"), float("nan")))
    return Estimate(r.map50, float(low), float(high))


def summarise(real: PointResult, control: PointResult, n_resamples: int, alpha: float, seed: int = 0) -> dict[str, float]:
    """Every metric of one point with its CI, its control's value, and the selectivity (paired bootstrap)."""
    out: dict[str, float] = {}
    pairs = {"bbox_iou": (real.bbox_iou, control.bbox_iou), "spatial_iou": (real.spatial_iou, control.spatial_iou)}
    if real.position_hit is not None:
        pairs["position_accuracy"] = (real.position_hit, control.position_hit)
    if real.presence_hit is not None and control.presence_hit is not None:
        pairs["presence_accuracy"] = (real.presence_hit, control.presence_hit)
    for name, (a, c) in pairs.items():
        out |= mean_ci(a, n_resamples, alpha, seed).as_dict(name)
        out[schema.metric_field_key(name, "control")] = float(np.mean(c))
        if name != "spatial_iou":
            short = name.split("_")[0]
            out |= mean_ci(a - c, n_resamples, alpha, seed).as_dict(f"{short}_selectivity")
    out |= map_ci(real, min(n_resamples, 2000), alpha, seed).as_dict("map50")
    out[schema.metric_field_key("map50", "control")] = control.map50
    out |= {schema.metric_field_key(k, "chance"): v for k, v in (real.chance or {}).items()}
    out["test_images"] = len(real.det_scores)
    out["test_images_with_object"] = len(real.bbox_iou)
    return out
