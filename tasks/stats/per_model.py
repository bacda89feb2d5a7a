"""One model x metric: the summary against the balanced value, the collapse verdict, TOST and the balance call.

Conventions (non-finite values, zero variance, NaN p, order-free resampling): ``tasks.stats.base``.
"Balanced" is claimed only by TOST (``balance_call``); a non-significant test is
reported as "not shown to differ".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats
from statsmodels.stats.weightstats import DescrStatsW

from tasks.stats.base import NAN, _clean, _is_zero_variance, _join, _Loggable
from tasks.stats.inference import _POWER_ALPHA, _mean_ci_fields, _wilcoxon_fields, cohen_d_ci, n_for_power, ttest_power

if TYPE_CHECKING:
    from tasks.stats.reliance import Reliance

__all__ = [
    "ShareSummary",
    "Verdict",
    "TostResult",
    "BalanceCall",
    "summarize",
    "collapse_verdict",
    "tost",
    "balance_call",
]

#: The tests a collapse verdict can rest on (``Verdict.test``).
T_TEST = "one-sample t-test of the mean share against 0.5"
SIGN_TEST = "exact sign test (binomial) of the shares against 0.5"


@dataclass(frozen=True)
class ShareSummary(_Loggable):
    """One model x metric: descriptive statistics and tests against ``baseline``.

    ``t`` / ``t_p``: one-sample two-sided t-test of the mean against baseline.
    ``wilcoxon_stat`` / ``wilcoxon_p``: two-sided Wilcoxon signed-rank test of
    ``values - baseline`` (zero differences dropped, scipy ``zero_method="wilcox"``).
    ``cohen_d = (mean - baseline) / sd``; ``d_ci_*`` its CI at ``confidence``,
    by inverting the noncentral t (normal approximation only where scipy's
    nct fails; ``d_ci_method`` says which, see ``cohen_d_ci``).
    ``power``: achieved power of the two-sided one-sample t-test at ``alpha``
    (default 0.05) for the observed d and n. ``n_for_80_power``: smallest integer n (>= 2)
    giving power >= 0.80 at the observed d (NaN when d is 0 or undefined).
    """

    n: int
    n_dropped: int
    mean: float
    sd: float
    baseline: float
    confidence: float
    ci_low: float
    ci_high: float
    ci_method: str  # "BCa" | "percentile" | "degenerate" | "none"
    n_resamples: int
    t: float
    t_p: float
    wilcoxon_stat: float
    wilcoxon_p: float
    cohen_d: float
    d_ci_low: float
    d_ci_high: float
    d_ci_method: str  # "noncentral-t" | "normal-approx" | "none"
    power: float
    power_method: str  # "statsmodels" | "noncentral-t-guarded" | "normal-approx" | "none"
    n_for_80_power: float
    note: str
    alpha: float = _POWER_ALPHA


@dataclass(frozen=True)
class Verdict(_Loggable):
    """Whether one model's share collapsed onto one modality.

    ``share`` is the mean image share s̄; ``imbalance = max(s̄, 1 - s̄)``.
    ``collapsed`` iff all three conditions hold: ``imbalance_exceeds``
    (imbalance > threshold), ``significant`` (the deciding test's p -- its Holm
    correction ``p_holm`` where the model is in a multiple-testing family --
    below alpha) and ``ci_beyond`` (the (1 - alpha) interval lies entirely
    beyond the threshold on the dominant side). ``test`` names the test that
    decided: the t-test, or at zero variance the exact sign test, whose
    interval is then the exact Clopper–Pearson bound of the fraction of
    samples beyond the threshold (``ci_source``). ``reason`` lists each
    condition and whether it held.
    """

    share: float
    imbalance: float
    dominant: str  # "image" | "text" | "none"
    threshold: float
    alpha: float
    p: float
    ci_low: float
    ci_high: float
    imbalance_exceeds: bool
    significant: bool
    ci_beyond: bool
    collapsed: bool
    reason: str
    test: str = T_TEST
    p_holm: float = NAN  # NaN: not in a Holm family (a control, or a single test)
    ci_level: float = 0.95
    ci_source: str = "bootstrap CI of the mean"


@dataclass(frozen=True)
class TostResult(_Loggable):
    """TOST equivalence of the mean to ``baseline`` within ``+/- margin``.

    H0: mean <= low or mean >= high; ``p = max(p_lower, p_upper)``;
    ``equivalent`` iff p < alpha. ``ci_low``/``ci_high`` is the (1 - 2 alpha)
    t-interval of the mean; equivalence holds iff it lies inside (low, high).
    """

    n: int
    n_dropped: int
    mean: float
    baseline: float
    margin: float
    low: float
    high: float
    alpha: float
    t_lower: float
    p_lower: float
    t_upper: float
    p_upper: float
    p: float
    ci_low: float
    ci_high: float
    equivalent: bool
    note: str


@dataclass(frozen=True)
class BalanceCall(_Loggable):
    """What may be said about one model's reliance on each modality (``balance_call``).

    ``label``, first match wins:

    * ``"collapsed"`` -- ``collapse_verdict`` held (population collapse toward
      ``dominant``);
    * ``"per-sample dominance"`` -- not collapsed on average, but more than
      half of the samples lie beyond the threshold (exact binomial test);
      ``direction`` says toward which modality, "mixed" when both;
    * ``"balanced"`` -- TOST shows the mean within ``baseline +/- margin``
      AND the per-sample imbalance is shown within the margin (with
      ``reliance``), the only way balance is ever claimed;
    * ``"imbalanced"`` -- the deciding test's p < alpha, but none of the above;
    * ``"not testable"`` -- no test applies (n < 2, or zero variance without
      the exact tests of ``reliance``);
    * ``"not shown to differ"`` -- p >= alpha and no equivalence: absence of
      evidence of imbalance, *not* evidence of balance.
    """

    label: str
    dominant: str  # "image" | "text" | "none" (side of the baseline the mean is on)
    collapsed: bool
    differs: bool
    equivalent: bool
    margin: float
    alpha: float
    reason: str
    direction: str = "none"  # side(s) of the samples beyond the threshold: image | text | mixed | none
    per_sample_dominance: bool = False
    within_margin: bool = False


def summarize(
    values,
    baseline: float = 0.5,
    n_resamples: int = 9999,
    seed: int = 0,
    confidence: float = 0.95,
    alpha: float = _POWER_ALPHA,
) -> ShareSummary:
    """Describe one score vector and test it against ``baseline``.

    Degenerate data never raises. n = 0: everything NaN. n < 3: no bootstrap
    CI (NaN); n < 2: no SD or tests. Zero variance (see module docstring): CI
    collapses to the mean (``ci_method="degenerate"``), t-test p, d, d's CI,
    power and n_for_80_power are NaN ("zero variance: not testable"); the
    Wilcoxon test is still reported because it is defined on signs/ranks
    (all-equal non-zero differences give its smallest attainable p), unless
    every difference is zero, when it is NaN too. ``alpha`` is the test
    level that ``power`` and ``n_for_80_power`` refer to.
    """
    x, n_dropped = _clean(values)
    n = int(x.size)
    mean = float(np.mean(x)) if n else NAN
    sd = float(np.std(x, ddof=1)) if n >= 2 else NAN
    notes: list[str] = []
    if n == 0:
        notes.append("no finite values")
    elif n < 2:
        notes.append(f"n={n} < 2: SD and tests not computed")

    ci, ci_note = _mean_ci_fields(x, confidence, n_resamples, seed)
    notes.append(ci_note)

    t = t_p = d = NAN
    if _is_zero_variance(x):
        sd = 0.0
        notes.append("zero variance: t-test, Cohen's d and power not testable")
    elif n >= 2:
        res = stats.ttest_1samp(x, baseline, alternative="two-sided")
        t, t_p = float(res.statistic), float(res.pvalue)
        d = (mean - baseline) / sd

    wilcoxon, w_note = _wilcoxon_fields(x - baseline)
    notes.append(w_note)
    effect = _effect_size_fields(d, n, confidence, alpha)
    if d == 0:
        notes.append("d = 0: n for 80% power undefined")

    return ShareSummary(
        n=n, n_dropped=n_dropped, mean=mean, sd=sd, baseline=float(baseline), **ci,
        t=t, t_p=t_p, **wilcoxon, **effect, note=_join(*notes), alpha=float(alpha),
    )


def _effect_size_fields(d: float, n: int, confidence: float, alpha: float) -> dict:
    """Cohen's d with its CI, the achieved power and the n for 80% power, as ``ShareSummary`` fields."""
    d_low, d_high, d_method = cohen_d_ci(d, n, confidence)
    power, power_method = ttest_power(d, n, alpha)
    return {"cohen_d": d, "d_ci_low": d_low, "d_ci_high": d_high, "d_ci_method": d_method,
            "power": power, "power_method": power_method, "n_for_80_power": n_for_power(d, alpha=alpha)}


def collapse_verdict(summary: ShareSummary, threshold: float = 0.80, alpha: float = 0.05,
                     reliance: "Reliance | None" = None, p_holm: float | None = None) -> Verdict:
    """Collapse iff imbalance > threshold AND the deciding test's p < alpha AND the interval lies beyond the threshold.

    ``summary`` must summarise image shares (image / (image + text)) against
    baseline 0.5. Dominant modality is "image" if s̄ > 0.5 else "text"; the
    interval condition is ``ci_low > threshold`` (image) or ``ci_high < 1 -
    threshold`` (text), on the summary's CI (computed at 1 - alpha by the
    callers that decide). A share that is the same on every sample has no
    t-test; with ``reliance`` (``tasks.stats.reliance``) it is decided by tests
    valid at zero variance: the exact sign test against 0.5, and the exact
    Clopper–Pearson (1 - alpha) lower bound of the fraction of samples beyond
    the threshold on the dominant side above one half. Without ``reliance``
    such data stays not testable (never collapsed). ``p_holm``: the
    Holm-corrected p of this test in its family; when given it decides
    ``significant``. Raises ValueError if ``summary.baseline`` is not 0.5.
    """
    if summary.baseline != 0.5:
        raise ValueError(
            f"collapse_verdict needs a summary tested against 0.5, got baseline {summary.baseline}"
        )
    level = 1.0 - alpha
    s = summary.mean
    holm_p = NAN if p_holm is None else float(p_holm)
    if not math.isfinite(s):
        return Verdict(
            share=NAN, imbalance=NAN, dominant="none", threshold=float(threshold),
            alpha=float(alpha), p=summary.t_p, ci_low=summary.ci_low,
            ci_high=summary.ci_high, imbalance_exceeds=False, significant=False,
            ci_beyond=False, collapsed=False, reason="no data: not collapsed", test="none", p_holm=holm_p,
            ci_level=level,
        )
    imbalance = max(s, 1.0 - s)
    dominant = "image" if s > 0.5 else "text"
    exceeds = imbalance > threshold
    exact = not math.isfinite(summary.t_p) and reliance is not None and reliance.zero_variance
    if exact:
        p, test = reliance.sign_p, SIGN_TEST
        bound = reliance.frac_image_ci_low if dominant == "image" else reliance.frac_text_ci_low
        beyond = bool(math.isfinite(bound) and bound > 0.5)
        ci_low, ci_high = (reliance.frac_image_ci_low, reliance.frac_image_ci_high) if dominant == "image" else (
            reliance.frac_text_ci_low, reliance.frac_text_ci_high)
        source = f"Clopper-Pearson interval of the fraction of samples beyond the threshold toward {dominant}"
        ci_text = f"exact lower bound {bound:.4g} of the fraction of samples beyond the threshold > 0.5"
        short = f"Clopper-Pearson, {level:g}"
    else:
        p, test = summary.t_p, (T_TEST if math.isfinite(summary.t_p) else "none")
        ci_low, ci_high, source = summary.ci_low, summary.ci_high, f"{summary.ci_method} CI of the mean"
        short = summary.ci_method
        if dominant == "image":
            beyond = bool(math.isfinite(ci_low) and ci_low > threshold)
            ci_text = f"CI low {ci_low:.4g} > {threshold:g}"
        else:
            beyond = bool(math.isfinite(ci_high) and ci_high < 1.0 - threshold)
            ci_text = f"CI high {ci_high:.4g} < {1.0 - threshold:g}"
    decide_p = holm_p if p_holm is not None else p
    significant = bool(math.isfinite(decide_p) and decide_p < alpha)
    collapsed = exceeds and significant and beyond

    def mark(ok: bool) -> str:
        return "held" if ok else "failed"

    which = "Holm p" if p_holm is not None else "p"
    p_text = (f"{test}: {which} {decide_p:.3g} < {alpha:g}" if math.isfinite(decide_p)
              else "not testable (no test applies)")
    reason = (
        f"{'collapsed' if collapsed else 'not collapsed'} toward {dominant}: "
        f"imbalance {imbalance:.4g} > {threshold:g} {mark(exceeds)}; "
        f"{p_text} {mark(significant) if math.isfinite(decide_p) else ''}".rstrip() + "; "
        f"{ci_text} ({short}) {mark(beyond)}"
    )
    return Verdict(
        share=s, imbalance=imbalance, dominant=dominant, threshold=float(threshold),
        alpha=float(alpha), p=p, ci_low=ci_low, ci_high=ci_high,
        imbalance_exceeds=exceeds, significant=significant, ci_beyond=beyond,
        collapsed=collapsed, reason=reason, test=test, p_holm=holm_p, ci_level=level, ci_source=source,
    )


def tost(values, baseline: float = 0.5, margin: float = 0.05, alpha: float = 0.05) -> TostResult:
    """Two one-sided t-tests for equivalence of the mean to ``baseline``.

    Uses statsmodels ``DescrStatsW(x).ttost_mean(low, high)`` (statsmodels
    0.15 has no ``ttost_onesamp``). "Balanced" may be claimed only when
    ``equivalent`` is True. Zero variance or n < 2: p NaN, not equivalent.
    """
    if margin <= 0:
        raise ValueError("margin must be positive")
    x, n_dropped = _clean(values)
    n = int(x.size)
    low, high = float(baseline - margin), float(baseline + margin)
    test, note = _ttost_fields(x, low, high, alpha)
    return TostResult(
        n=n, n_dropped=n_dropped, mean=float(np.mean(x)) if n else NAN, baseline=float(baseline),
        margin=float(margin), low=low, high=high, alpha=float(alpha),
        **test, equivalent=bool(math.isfinite(test["p"]) and test["p"] < alpha), note=note,
    )


_TTOST_FIELDS = ("t_lower", "p_lower", "t_upper", "p_upper", "p", "ci_low", "ci_high")


def _ttost_fields(x: np.ndarray, low: float, high: float, alpha: float) -> tuple[dict, str]:
    """The two one-sided t-tests and the (1 - 2 alpha) t-interval as ``TostResult`` fields, and a note.

    All NaN (with the note saying why) below two values or at zero variance.
    """
    if x.size < 2:
        return dict.fromkeys(_TTOST_FIELDS, NAN), f"n={x.size} < 2: TOST not computed"
    if _is_zero_variance(x):
        return dict.fromkeys(_TTOST_FIELDS, NAN), "zero variance: TOST not testable"
    d = DescrStatsW(x)
    p, (t_lower, p_lower, _), (t_upper, p_upper, _) = d.ttost_mean(low, high)
    ci_low, ci_high = d.tconfint_mean(alpha=2 * alpha)
    values = (t_lower, p_lower, t_upper, p_upper, p, ci_low, ci_high)
    return dict(zip(_TTOST_FIELDS, map(float, values))), ""


def balance_call(
    summary: ShareSummary,
    equivalence: TostResult,
    verdict: Verdict | None = None,
    alpha: float = 0.05,
    reliance: "Reliance | None" = None,
) -> BalanceCall:
    """Combine the collapse verdict, the per-sample reliance, the test and TOST into one label.

    See ``BalanceCall`` for the labels. ``verdict`` is optional because
    collapse is defined only for shares against 0.5; it supplies the deciding
    test (Holm-corrected where it has a family). A mean that differs
    significantly from the baseline yet lies provably within the margin is
    "balanced" (the difference is real but negligible); the reason says so.
    At zero variance TOST has no t statistic: with ``reliance`` two exact
    one-sided sign tests stand in for it.
    """
    if equivalence.baseline != summary.baseline:
        raise ValueError(
            f"TOST baseline {equivalence.baseline} differs from the summary's {summary.baseline}: "
            "test both against the same balanced value"
        )
    m, b = summary.mean, summary.baseline
    dominant = "none" if not math.isfinite(m) or m == b else ("image" if m > b else "text")
    if verdict is not None and verdict.test != "none":
        p = verdict.p_holm if math.isfinite(verdict.p_holm) else verdict.p
        test_name = verdict.test + (" (Holm)" if math.isfinite(verdict.p_holm) else "")
    else:
        p, test_name = summary.t_p, "t-test"
    differs = bool(math.isfinite(p) and p < alpha)
    eq_p = equivalence.p
    eq_name = f"TOST p {{}} {{}} {equivalence.alpha:g} (margin +/-{equivalence.margin:g})"
    if not math.isfinite(eq_p) and reliance is not None and reliance.zero_variance:
        eq_p = reliance.equivalence_sign_p
        eq_name = f"exact TOST by sign tests p {{}} {{}} {equivalence.alpha:g} (margin +/-{equivalence.margin:g})"
    equivalent = bool(math.isfinite(eq_p) and eq_p < equivalence.alpha)
    within = reliance.within_margin if reliance is not None else True
    direction = reliance.direction if reliance is not None else "none"
    dominance = bool(reliance is not None and reliance.dominant_samples)
    collapsed = bool(verdict is not None and verdict.collapsed)
    span = f"{equivalence.low:g}..{equivalence.high:g}"
    tost_text = eq_name.format(f"{eq_p:.3g}", "<" if equivalent else ">=") if math.isfinite(eq_p) else "TOST not testable"
    p_text = f"{test_name} p {p:.3g} vs {b:g}" if math.isfinite(p) else "not testable"
    if collapsed:
        label, why = "collapsed", verdict.reason  # type: ignore[union-attr]
    elif dominance:
        label = "per-sample dominance"
        why = (f"not collapsed on average, but a fraction {reliance.frac_beyond:.3g} of the samples lies beyond the "  # type: ignore[union-attr]
               f"threshold (exact binomial p {reliance.dominance_p:.3g} < {alpha:g}; direction {direction}): "  # type: ignore[union-attr]
               "the model relies on one modality per sample")
    elif equivalent and within:
        label = "balanced"
        why = f"mean {m:.4g} shown within {span}: {tost_text}"
        if reliance is not None:
            why += f"; per-sample imbalance shown below {0.5 + reliance.margin:g} ({reliance.within_test}, p {reliance.within_p:.3g})"
        if differs:
            why += f"; {p_text} < {alpha:g}: a real but negligible difference"
    elif differs:
        label = "imbalanced"
        why = f"{p_text} < {alpha:g} toward {dominant}; not collapsed; {tost_text}"
        if equivalent and not within:
            why += "; the mean is within the margin but the per-sample imbalance is not"
    elif not math.isfinite(p):
        label = "not testable"
        why = f"{p_text} ({summary.note or 'no data'}); nothing is claimed"
    else:
        label = "not shown to differ"
        why = f"{p_text} >= {alpha:g} but {tost_text}"
        if equivalent and not within:
            why += " while the per-sample imbalance is not shown within the margin"
        why += ": not shown to differ, which is not evidence of balance"
    return BalanceCall(
        label=label, dominant=dominant, collapsed=collapsed, differs=differs,
        equivalent=equivalent, margin=float(equivalence.margin), alpha=float(alpha), reason=why,
        direction=direction, per_sample_dominance=dominance, within_margin=bool(within and reliance is not None),
    )
