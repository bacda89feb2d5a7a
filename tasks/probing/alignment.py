"""Representation alignment: linear CKA (Kornblith et al. 2019) between extraction points.

``linear_cka(x, y)`` compares two sets of features of the same n images,
[n, d1] and [n, d2], through their n × n Gram matrices, so the widths may
differ. The plain estimator is biased upward when n is small next to the
width (two unrelated random representations score well above 0); the
debiased form uses the unbiased HSIC estimator (Song et al. 2012; Nguyen et
al. 2021), whose value for unrelated representations is near 0 at any n.
"""
from __future__ import annotations

import numpy as np


def _gram(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x @ x.T


def _center(k: np.ndarray) -> np.ndarray:
    mean_rows = k.mean(0, keepdims=True)
    return k - mean_rows - mean_rows.T + k.mean()


def _hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741 - the estimator's own names
    n = len(k)
    k, l = k.copy(), l.copy()  # noqa: E741
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    ones = np.ones(n)
    term = np.sum(k * l) + (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2)) - 2 * (ones @ k @ l @ ones) / (n - 2)
    return float(term / (n * (n - 3)))


def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """Linear CKA of two representations of the same images (rows); 1 for equal up to rotation and scale."""
    if len(x) != len(y):
        raise ValueError(f"CKA compares the same images: got {len(x)} and {len(y)} rows")
    if debiased and len(x) < 4:
        raise ValueError("debiased CKA needs at least 4 images")
    k, l = _gram(x), _gram(y)  # noqa: E741
    if debiased:
        xy, xx, yy = _hsic_unbiased(k, l), _hsic_unbiased(k, k), _hsic_unbiased(l, l)
    else:
        kc, lc = _center(k), _center(l)
        xy, xx, yy = np.sum(kc * lc), np.sum(kc * kc), np.sum(lc * lc)
    denom = np.sqrt(max(xx, 0.0) * max(yy, 0.0))
    return float(xy / denom) if denom > 0 else float("nan")


def cka_matrix(features: dict[str, np.ndarray], debiased: bool = False) -> tuple[list[str], np.ndarray]:
    """Point names (in the given order) and their pairwise CKA, symmetric with 1 on the diagonal."""
    names = list(features)
    m = np.eye(len(names))
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            m[i, j] = m[j, i] = linear_cka(features[a], features[names[j]], debiased)
    return names, m
