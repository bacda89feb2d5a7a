"""Models compared on the same samples (paired tests of the differences) and Holm's correction across a family.

Conventions (non-finite values, zero variance, NaN p, order-free resampling): ``tasks.stats.base``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from tasks.stats.base import NAN, _is_zero_variance, _join, _Loggable
from tasks.stats.inference import _mean_ci_fields, _signflip_pvalue, _wilcoxon_fields

__all__ = ["PairedComparison", "HolmResult", "HOLM_CORRECTION", "paired_comparison", "holm"]

#: How reports name the multiple-comparison correction (``holm`` below).
HOLM_CORRECTION = "Holm (step-down Bonferroni, as statsmodels multipletests method='holm'; not the Holm-Sidak default)"


@dataclass(frozen=True)
class PairedComparison(_Loggable):
    """Model A vs model B on the same samples; differences are ``a - b``.

    ``t``/``t_p``: paired t-test; ``wilcoxon_*``: Wilcoxon signed-rank on the
    differences; ``ci_*``: paired bootstrap CI of the mean difference (pairs
    are resampled together, which for the mean difference is resampling the
    differences); ``perm_p``: two-sided sign-flip permutation test of the mean
    difference (scipy's ``permutation_type="samples"`` definition), exact when
    ``2**n <= n_resamples`` (``perm_exact``), see ``_signflip_pvalue``.
    ``cohen_dz = mean_diff / sd_diff``, the paired effect size.
    """

    n: int
    n_dropped: int
    mean_a: float
    mean_b: float
    mean_diff: float
    sd_diff: float
    confidence: float
    ci_low: float
    ci_high: float
    ci_method: str
    n_resamples: int
    t: float
    t_p: float
    wilcoxon_stat: float
    wilcoxon_p: float
    perm_p: float
    perm_exact: bool
    note: str
    cohen_dz: float = NAN  # mean_diff / sd_diff (paired effect size); NaN if not testable


@dataclass(frozen=True)
class HolmResult:
    """Holm (step-down Bonferroni) adjustment across a family of p-values.

    NaN p-values (not testable) are excluded from the family: their adjusted
    value is NaN and they are never rejected.
    """

    names: tuple[str, ...]
    pvalues: tuple[float, ...]
    adjusted: tuple[float, ...]
    reject: tuple[bool, ...]
    alpha: float
    method: str = "holm"  # the statsmodels ``multipletests`` method actually used
    correction: str = HOLM_CORRECTION  # human-readable, for reports

    @property
    def family_size(self) -> int:
        """Number of testable (finite) p-values the correction was applied over."""
        return sum(math.isfinite(p) for p in self.pvalues)

    def as_params(self, prefix: str = "") -> dict[str, str]:
        return {f"{prefix}correction": self.correction, f"{prefix}correction_method": self.method}

    def as_dict(self, prefix: str = "") -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        for name, adj, rej in zip(self.names, self.adjusted, self.reject):
            out[f"{prefix}p_holm_{name}"] = float(adj)
            out[f"{prefix}reject_holm_{name}"] = int(rej)
        out[f"{prefix}holm_family_size"] = self.family_size
        return out


def paired_comparison(
    a, b, n_resamples: int = 9999, seed: int = 0, confidence: float = 0.95
) -> PairedComparison:
    """Compare two models scored on the same samples (differences ``a - b``).

    Pairs where either value is non-finite are dropped (``n_dropped``).
    Zero-variance differences: t-test NaN; all-zero differences: Wilcoxon NaN
    (the permutation p is then 1, which is correct: no sign flip changes 0).
    """
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    if xa.ndim != 1 or xb.ndim != 1 or xa.shape != xb.shape:
        raise ValueError(f"paired inputs must be 1-D of equal length, got {xa.shape} and {xb.shape}")
    keep = np.isfinite(xa) & np.isfinite(xb)
    xa, xb = xa[keep], xb[keep]
    n_dropped = int((~keep).sum())
    n = int(xa.size)
    diffs = xa - xb
    notes: list[str] = []
    if n == 0:
        notes.append("no finite pairs")

    mean_diff = float(np.mean(diffs)) if n else NAN
    sd_diff = float(np.std(diffs, ddof=1)) if n >= 2 else NAN
    ci, ci_note = _mean_ci_fields(diffs, confidence, n_resamples, seed)
    notes.append(ci_note)

    t = t_p = perm_p = NAN
    perm_exact = False
    if n >= 2:
        if _is_zero_variance(diffs):
            sd_diff = 0.0
            notes.append("zero variance of differences: paired t-test not testable")
        else:
            res = stats.ttest_rel(xa, xb, alternative="two-sided")
            t, t_p = float(res.statistic), float(res.pvalue)
        perm_p, perm_exact = _signflip_pvalue(diffs, n_resamples, seed)
    elif n == 1:
        notes.append("n=1: paired tests not computed")
    wilcoxon, w_note = _wilcoxon_fields(diffs)
    notes.append(w_note)

    return PairedComparison(
        n=n, n_dropped=n_dropped, mean_a=float(np.mean(xa)) if n else NAN, mean_b=float(np.mean(xb)) if n else NAN,
        mean_diff=mean_diff, sd_diff=sd_diff, **ci, t=t, t_p=t_p, **wilcoxon, perm_p=perm_p, perm_exact=perm_exact,
        note=_join(*notes), cohen_dz=mean_diff / sd_diff if math.isfinite(t) else NAN,
    )


def holm(pvalues: Sequence[float] | Mapping[str, float] | np.ndarray, alpha: float = 0.05) -> HolmResult:
    """Holm step-down adjustment, the formula of ``multipletests(method="holm")``.

    Computed here rather than by statsmodels, whose Holm branch runs ``gc.collect()`` on every call
    (a third of a second in a large process, three times per ``analyze``).

    Deliberately plain Holm (Bonferroni step-down), not statsmodels' default
    Holm–Šidák. A mapping keeps its keys as names; a sequence is named
    "0", "1", ... NaN p-values are left out of the family (adjusted NaN,
    never rejected).
    """
    if isinstance(pvalues, Mapping):
        names = tuple(str(k) for k in pvalues)
        p = np.asarray(list(pvalues.values()), dtype=float)
    else:
        p = np.asarray(pvalues, dtype=float).ravel()
        names = tuple(str(i) for i in range(p.size))
    adjusted = np.full(p.shape, np.nan)
    reject = np.zeros(p.shape, dtype=bool)
    ok = np.isfinite(p)
    if ok.any():
        rej, adj = _holm_step_down(p[ok], alpha)
        adjusted[ok] = adj
        reject[ok] = rej
    return HolmResult(
        names=names,
        pvalues=tuple(float(v) for v in p),
        adjusted=tuple(float(v) for v in adjusted),
        reject=tuple(bool(v) for v in reject),
        alpha=float(alpha),
    )


def _holm_step_down(p: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(reject, adjusted p) of Holm's step-down Bonferroni, line for line as statsmodels computes them."""
    order = np.argsort(p)
    sorted_p = p[order]
    m = sorted_p.size
    not_reject = sorted_p > alpha / np.arange(m, 0, -1)
    first = np.nonzero(not_reject)[0]
    not_reject[(first[0] if first.size else m):] = True  # step-down: stop at the first non-rejection
    adjusted = np.minimum(np.maximum.accumulate(sorted_p * np.arange(m, 0, -1)), 1.0)
    reject, out = np.empty(m, dtype=bool), np.empty(m)
    reject[order], out[order] = ~not_reject, adjusted
    return reject, out


