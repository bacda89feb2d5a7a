"""Per-sample reliance: what the mean share hides (DESIGN.md, "Verdicts").

A model that relies entirely on the image for half of its samples and
entirely on the text for the other half has a mean share near 0.5. The
per-sample imbalance ``max(s, 1 - s)`` and the fraction of samples beyond the
threshold toward each modality show it. Every test here is exact or valid at
zero variance, so a share that is identical on every sample (0 or 1 exactly,
the strongest collapse there is) is decided, not dropped:

* sign test (exact binomial, ``scipy.stats.binomtest``) of the shares against
  the balanced value: the zero-variance stand-in for the t-test;
* Clopper–Pearson intervals of the fractions beyond the threshold;
* the per-sample imbalance within the equivalence margin: a one-sided t-test of
  its mean below ``0.5 + margin``, or the exact sign test when it is constant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from tasks.stats.base import NAN, _clean, _is_zero_variance, _Loggable
from tasks.stats.inference import bootstrap_mean_ci


@dataclass(frozen=True)
class Reliance(_Loggable):
    """One model's per-sample reliance on each modality (shares ``s``, image / (image + text)).

    ``imbalance_*``: the per-sample imbalance ``max(s, 1 - s)``, its mean and
    its (1 - alpha) bootstrap CI. ``n_image`` / ``n_text``: samples with
    ``s > threshold`` / ``s < 1 - threshold``; ``frac_*`` with exact
    Clopper–Pearson (1 - alpha) CIs. ``dominance_p``: exact binomial test that
    more than half of the samples lie beyond the threshold (either side).
    ``sign_p``: exact two-sided sign test of the shares against 0.5.
    ``within_p``: the mean per-sample imbalance is below ``0.5 + margin``
    (``within_test`` names the test). ``direction``: the side(s) with samples
    beyond the threshold, "mixed" when both sides have some.
    """

    n: int
    threshold: float
    margin: float
    alpha: float
    imbalance_mean: float
    imbalance_ci_low: float
    imbalance_ci_high: float
    n_image: int
    n_text: int
    frac_image: float
    frac_image_ci_low: float
    frac_image_ci_high: float
    frac_text: float
    frac_text_ci_low: float
    frac_text_ci_high: float
    frac_beyond: float
    frac_beyond_ci_low: float
    frac_beyond_ci_high: float
    dominance_p: float
    dominant_samples: bool      # dominance_p < alpha: most samples rely on one modality
    sign_p: float
    within_p: float
    within_margin: bool         # within_p < alpha: per-sample imbalance shown within the margin
    zero_variance: bool
    direction: str              # "image" | "text" | "mixed" | "none"
    within_test: str
    equivalence_sign_p: float = NAN  # exact TOST stand-in: two one-sided sign tests against 0.5 -/+ margin


def _exact_ci(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Clopper–Pearson interval from its beta quantiles: scipy's ``proportion_ci(method="exact")`` without
    the root finding (the same bounds, a fraction of the time; it ran six times per model)."""
    if n == 0:
        return NAN, NAN
    tail = (1.0 - confidence) / 2
    low = float(scipy_stats.beta.ppf(tail, k, n - k + 1)) if k > 0 else 0.0
    high = float(scipy_stats.beta.ppf(1.0 - tail, k + 1, n - k)) if k < n else 1.0
    return low, high


def _binom_p(k: int, n: int, alternative: str) -> float:
    return float(scipy_stats.binomtest(k, n, 0.5, alternative=alternative).pvalue) if n else NAN


def reliance(values, threshold: float = 0.80, margin: float = 0.05, alpha: float = 0.05,
             n_resamples: int = 9999, seed: int = 0) -> Reliance:
    """Per-sample reliance of one model (non-finite values dropped; see ``Reliance``)."""
    x, _ = _clean(values)
    n = int(x.size)
    confidence = 1.0 - alpha
    imb = np.maximum(x, 1.0 - x)
    n_image, n_text = int((x > threshold).sum()), int((x < 1.0 - threshold).sum())
    n_beyond = n_image + n_text
    lo, hi, _ = bootstrap_mean_ci(imb, confidence=confidence, n_resamples=n_resamples, seed=seed) if n else (NAN, NAN, "")
    off_half = x[x != 0.5]
    # every share exactly 0.5: no sample says anything against balance, p = 1
    sign_p = (_binom_p(int((off_half > 0.5).sum()), int(off_half.size), "two-sided") if off_half.size else 1.0) if n else NAN
    bound = 0.5 + margin
    if n < 2:
        within_p, within_test = NAN, "not computed (n < 2)"
    elif _is_zero_variance(imb):
        within_p = _binom_p(int((imb < bound).sum()), n, "greater")
        within_test = f"exact sign test of the per-sample imbalance below {bound:g} (it is the same on every sample)"
    else:
        within_p = float(scipy_stats.ttest_1samp(imb, bound, alternative="less").pvalue)
        within_test = f"one-sided t-test of the mean per-sample imbalance below {bound:g}"
    low, high = 0.5 - margin, 0.5 + margin
    eq_sign_p = max(_binom_p(int((x > low).sum()), n, "greater"), _binom_p(int((x < high).sum()), n, "greater")) if n else NAN
    direction = ("mixed" if n_image and n_text else "image" if n_image else "text" if n_text else "none")
    dominance_p = _binom_p(n_beyond, n, "greater")
    ci_image, ci_text, ci_beyond = (_exact_ci(k, n, confidence) for k in (n_image, n_text, n_beyond))
    return Reliance(
        n=n, threshold=float(threshold), margin=float(margin), alpha=float(alpha),
        imbalance_mean=float(imb.mean()) if n else NAN, imbalance_ci_low=lo, imbalance_ci_high=hi,
        n_image=n_image, n_text=n_text,
        frac_image=n_image / n if n else NAN, frac_image_ci_low=ci_image[0], frac_image_ci_high=ci_image[1],
        frac_text=n_text / n if n else NAN, frac_text_ci_low=ci_text[0], frac_text_ci_high=ci_text[1],
        frac_beyond=n_beyond / n if n else NAN, frac_beyond_ci_low=ci_beyond[0], frac_beyond_ci_high=ci_beyond[1],
        dominance_p=dominance_p, dominant_samples=bool(math.isfinite(dominance_p) and dominance_p < alpha),
        sign_p=sign_p, within_p=within_p, within_margin=bool(math.isfinite(within_p) and within_p < alpha),
        zero_variance=bool(n >= 2 and _is_zero_variance(x)), direction=direction, within_test=within_test,
        equivalence_sign_p=eq_sign_p,
    )


def side_ci_low(r: Reliance, side: str) -> float:
    """Exact lower bound of the fraction of samples beyond the threshold on ``side`` ("image" | "text")."""
    return r.frac_image_ci_low if side == "image" else r.frac_text_ci_low
