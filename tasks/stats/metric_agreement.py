"""MM-SHAP beside the verdict metric: its signed modality sums, and a sentence when the two disagree.

MM-SHAP's V-SHAP is Σ|φ_image| / (Σ|φ_image| + Σ|φ_text|) over many players.
Players of one modality whose values cancel (one patch raises the score,
another lowers it) add to that modality's absolute sum but not to its signed
sum Σφ_image, which is what the modality contributes as a whole (efficiency:
Σφ_image + Σφ_text = v(full) − v(empty)). The signed share
|Σφ_image| / (|Σφ_image| + |Σφ_text|) is therefore the like-for-like
comparison with the two-player modality Shapley share.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tasks.stats.base import _Loggable


@dataclass(frozen=True)
class Agreement(_Loggable):
    verdict_mean: float          # the verdict metric's mean share
    mm_shap_mean: float          # V-SHAP (absolute sums)
    sum_image_mean: float        # Σφ_image, signed
    sum_text_mean: float         # Σφ_text, signed
    signed_share_mean: float     # |Σφ_image| / (|Σφ_image| + |Σφ_text|)
    disagree: bool               # one side of the threshold for one metric, the other side for the other
    why: str


def _side(share: float, threshold: float) -> str:
    if not math.isfinite(share):
        return "undefined"
    return "image" if share > threshold else "text" if share < 1 - threshold else "neither"


def compare(verdict_shares, mm_shap, sum_image, sum_text, signed, threshold: float) -> Agreement:
    """Per-model means of each per-sample column, and whether MM-SHAP and the verdict metric disagree (and why)."""
    mean = lambda x: float(np.nanmean(x)) if np.isfinite(np.asarray(x, dtype=float)).any() else math.nan  # noqa: E731
    v, m, si, st, s = (mean(x) for x in (verdict_shares, mm_shap, sum_image, sum_text, signed))
    dv, dm, ds = _side(v, threshold), _side(m, threshold), _side(s, threshold)
    disagree = dm != "undefined" and dv != dm
    if not disagree:
        why = f"MM-SHAP and the verdict metric agree (both {dv} at the threshold)"
    elif math.isfinite(s) and ds == dv:
        why = (f"MM-SHAP lies {dm}, the verdict metric {dv}; the signed share agrees with the verdict metric: "
               "MM-SHAP's sum of absolute player values inflates a modality whose players cancel")
    else:
        why = (f"MM-SHAP lies {dm}, the verdict metric {dv}, the signed share {ds}: "
               "the many-player and the two-player values differ beyond player cancellation (interactions "
               "between the players of one modality, or MM-SHAP's sampling error)")
    return Agreement(v, m, si, st, s, disagree, why)
