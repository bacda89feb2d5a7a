"""Statistics for attention-share scores (DESIGN.md, "Statistics").

Pure functions: numpy arrays in, frozen dataclasses out. Nothing here knows
about Prefect or MLflow; every result has ``as_dict()`` giving a flat
``{name: float | int}`` mapping (booleans become 0/1, strings are left out)
ready for ``mlflow.log_metrics``; the string fields (``note``, ``ci_method``,
...) are available from ``as_params()``.

Conventions
-----------
* Non-finite inputs (NaN, +/-inf) are dropped and counted in ``n_dropped``.
* "Zero variance" means every value is identical, or the sample SD is below
  ``1e-12 * max(1, |mean|)``. Floating-point noise on a constant sample (for
  example ``np.full(10, 0.3)``, whose computed SD is ~1e-17) otherwise makes
  ``scipy.stats.ttest_1samp`` report t ~ -1e16 and p ~ 1e-141, calling a
  degenerate sample significant. Such a sample is *not testable*: t-test p,
  Cohen's d, its CI and the power numbers are NaN, and ``note`` says why.
  Callers must treat NaN p as "not testable", never as "not significant".
* p-values that cannot be computed are NaN, never 0 or 1.
* Resampling is seeded and order-free: bootstrap CIs and sign-flip p-values
  are computed on the sorted sample (differences), so the same values in any
  order give bit-identical results.
* "Balanced" is claimed only by TOST (``balance_call``); a non-significant
  test is reported as "not shown to differ".
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
from scipy import optimize, stats
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import DescrStatsW

if TYPE_CHECKING:
    from tasks.reliance import Reliance

__all__ = [
    "ShareSummary",
    "Verdict",
    "PairedComparison",
    "HolmResult",
    "TostResult",
    "BalanceCall",
    "HOLM_CORRECTION",
    "summarize",
    "bootstrap_mean_ci",
    "collapse_verdict",
    "paired_comparison",
    "holm",
    "tost",
    "balance_call",
    "ttest_power",
    "n_for_power",
    "cohen_d_ci",
]

NAN = float("nan")
_ZERO_SD_RTOL = 1e-12
_POWER_ALPHA = 0.05
_TARGET_POWER = 0.80
#: The tests a collapse verdict can rest on (``Verdict.test``).
T_TEST = "one-sample t-test of the mean share against 0.5"
SIGN_TEST = "exact sign test (binomial) of the shares against 0.5"
#: How reports name the multiple-comparison correction (``holm`` below).
HOLM_CORRECTION = "Holm (step-down Bonferroni, as statsmodels multipletests method='holm'; not the Holm-Sidak default)"


class _Loggable:
    """Mixin: flat numeric dict for metrics, string dict for params."""

    def as_dict(self, prefix: str = "") -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, (bool, np.bool_)):
                out[prefix + f.name] = int(v)
            elif isinstance(v, (int, np.integer)):
                out[prefix + f.name] = int(v)
            elif isinstance(v, (float, np.floating)):
                out[prefix + f.name] = float(v)
        return out

    def as_params(self, prefix: str = "") -> dict[str, str]:
        return {
            prefix + f.name: getattr(self, f.name)
            for f in fields(self)  # type: ignore[arg-type]
            if isinstance(getattr(self, f.name), str)
        }


# --------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _clean(values) -> tuple[np.ndarray, int]:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D array of scores, got shape {x.shape}")
    keep = np.isfinite(x)
    return x[keep], int((~keep).sum())


def _is_zero_variance(x: np.ndarray) -> bool:
    if x.size < 2:
        return False
    if np.ptp(x) == 0:
        return True
    sd = float(np.std(x, ddof=1))
    return sd <= _ZERO_SD_RTOL * max(1.0, abs(float(np.mean(x))))


def _mean_stat(x, axis=-1):
    return np.mean(x, axis=axis)


def _mean_ci(
    x: np.ndarray, confidence: float, n_resamples: int, seed: int
) -> tuple[float, float, str, str]:
    """BCa bootstrap CI of the mean; percentile fallback when BCa is NaN.

    Returns ``(low, high, method, note)``. No resampling for n < 3 (NaN, "none")
    or for a zero-variance sample (collapses to the mean, "degenerate").
    """
    if x.size < 3:
        return NAN, NAN, "none", f"n={x.size} < 3: bootstrap CI not computed"
    if _is_zero_variance(x):
        m = float(np.mean(x))
        return m, m, "degenerate", "zero variance: CI collapses to the mean"
    # Sorted, so the seeded resamples (indices into x) depend only on the
    # multiset of values: the CI is the same whatever order the samples (or
    # the rows of a scores table) arrive in.
    x = np.sort(x)
    note = ""
    # scipy's BCa and percentile intervals on the bootstrap distribution of the mean, computed from
    # resampling counts (_resample_counts: scipy's own draws) instead of a gathered [B, n] resample array
    drawn = SimpleNamespace(bootstrap_distribution=_resample_counts(x.size, n_resamples, seed) @ x / x.size)

    def interval(method: str) -> tuple[float, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.bootstrap((x,), _mean_stat, n_resamples=0, bootstrap_result=drawn, vectorized=True,
                                  confidence_level=confidence, method=method)
        return float(res.confidence_interval.low), float(res.confidence_interval.high)

    lo, hi = interval("BCa")
    method = "BCa"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = interval("percentile")
        method = "percentile"
        note = "BCa CI undefined (degenerate bootstrap); percentile CI used"
    return lo, hi, method, note


@functools.lru_cache(maxsize=2)
def _resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """[n_resamples, n] how often each value is drawn in each bootstrap resample, as float64.

    The draws are exactly those of ``scipy.stats.bootstrap(..., rng=np.random.default_rng(seed))``
    (int32 draws give the same stream as its int64 ones, in half the time), so the CI is scipy's; the
    resample means are then one matrix-vector product, and every sample of the same size and seed (all
    models and pairs of an ``analyze`` run) shares one draw. Read-only: it is cached.
    """
    draws = np.random.default_rng(seed).integers(0, n, (n_resamples, n), dtype=np.int32)
    offsets = np.arange(n_resamples, dtype=np.int64)[:, None] * n
    counts = np.bincount((draws + offsets).ravel(), minlength=n_resamples * n).reshape(n_resamples, n)
    counts = counts.astype(np.float64)
    counts.flags.writeable = False
    return counts


def bootstrap_mean_ci(
    values, confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0
) -> tuple[float, float, str]:
    """BCa bootstrap CI of the mean of ``values`` (non-finite values dropped).

    Returns ``(low, high, method)`` with the conventions of ``summarize``
    (``method`` "BCa" | "percentile" | "degenerate" | "none").
    """
    x, _ = _clean(values)
    if x.size == 0:
        return NAN, NAN, "none"
    lo, hi, method, _ = _mean_ci(x, confidence, n_resamples, seed)
    return lo, hi, method


def _wilcoxon(diffs: np.ndarray) -> tuple[float, float, str]:
    """Two-sided signed-rank test of ``diffs`` against 0; NaN when untestable."""
    nonzero = diffs[diffs != 0]
    if nonzero.size == 0:
        return NAN, NAN, "all differences zero: Wilcoxon not testable"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        res = stats.wilcoxon(diffs, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue), ""


def _signflip_pvalue(diffs: np.ndarray, n_resamples: int, seed: int) -> tuple[float, bool]:
    """Two-sided sign-flip permutation p of ``mean(diffs)``; returns ``(p, exact)``.

    H0: the differences are symmetric about 0 (model labels exchangeable
    within each sample). Exact (all 2**n sign vectors) when
    ``2**n <= n_resamples``, computed by ``scipy.stats.permutation_test``
    with ``permutation_type="samples"`` on the differences. Otherwise Monte
    Carlo with scipy's definitions -- p = min(1, 2 min(P(T* <= t), P(T* >= t)))
    with the +1 correction and scipy's relative tolerance for ties -- but as
    one +/-1 matrix product: scipy's Monte-Carlo path permutes each pair in a
    Python loop over the samples (~0.5 s per comparison at n = 500, the
    bulk of an ``analyze`` run, against ~0.05 s here).
    """
    n = diffs.size
    d = np.sort(diffs)  # sign draws then depend only on the multiset: order-invariant
    if 2.0**n <= n_resamples:
        res = stats.permutation_test(
            (d,), _mean_stat, permutation_type="samples", vectorized=True,
            n_resamples=n_resamples, alternative="two-sided",
        )
        return float(res.pvalue), True
    rng = np.random.default_rng(seed)
    observed = float(np.mean(d))
    gamma = abs(np.finfo(float).eps * 100 * observed)  # scipy's tie tolerance
    # Signs in blocks of 8: one random byte per block picks one of the block's 256 precomputed signed sums,
    # so a resample costs n/8 table look-ups instead of n multiply-adds of a +/-1 matrix.
    blocks = -(-n // 8)
    padded = np.zeros(blocks * 8)
    padded[:n] = d  # a padded zero contributes nothing whatever its sign
    signs = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1) * 2.0 - 1  # [256, 8]
    tables = signs @ padded.reshape(blocks, 8).T  # [256, blocks]
    columns = np.arange(blocks)
    batch = max(1, (1 << 22) // blocks)  # bound the look-ups of one step
    less = greater = 0
    done = 0
    while done < n_resamples:
        b = min(batch, n_resamples - done)
        codes = rng.integers(0, 256, size=(b, blocks), dtype=np.uint8)
        null = tables[codes, columns].sum(axis=1) / n
        less += int(np.count_nonzero(null <= observed + gamma))
        greater += int(np.count_nonzero(null >= observed - gamma))
        done += b
    p_less = (less + 1) / (n_resamples + 1)
    p_greater = (greater + 1) / (n_resamples + 1)
    return float(min(1.0, 2 * min(p_less, p_greater))), False


def _nct_power(d: float, n: int, alpha: float) -> tuple[float, str]:
    """Two-sided one-sample t-test power straight from the noncentral t.

    power = P(T > t_c) + P(T < -t_c), T ~ nct(n - 1, |d| sqrt(n)).
    scipy's ``nct.cdf`` returns NaN far in the wrong-side tail at large
    noncentrality (e.g. df=63, nc=16 — this is what makes statsmodels return
    NaN). That term is bounded: P(T < -t_c) <= P(T < 0) = Phi(-nc), so when it
    is NaN and Phi(-nc) < 1e-12 it is taken as 0 (error below 1e-12).
    """
    df = n - 1
    nc = abs(d) * math.sqrt(n)
    tc = float(stats.t.ppf(1 - alpha / 2, df))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        upper = float(stats.nct.sf(tc, df, nc))
        if not math.isfinite(upper):
            upper = 1.0 - float(stats.nct.cdf(tc, df, nc))
        lower = float(stats.nct.cdf(-tc, df, nc))
    bound = float(stats.norm.sf(nc))
    method = "noncentral-t-guarded"
    if not math.isfinite(lower):
        lower = 0.0 if bound < 1e-12 else NAN
    lower = min(lower, bound) if math.isfinite(lower) else lower
    if not (math.isfinite(upper) and math.isfinite(lower)):
        # Last resort: normal approximation of the noncentral t.
        upper = float(stats.norm.sf(tc - nc))
        lower = float(stats.norm.cdf(-tc - nc))
        method = "normal-approx"
    return float(min(1.0, max(0.0, upper + lower))), method


def ttest_power(d: float, n: int, alpha: float = _POWER_ALPHA) -> tuple[float, str]:
    """Power of the two-sided one-sample t-test; returns ``(power, method)``.

    Uses statsmodels ``TTestPower().power``; when that is NaN (it is at large
    noncentrality, e.g. d=2, n=64) the guarded noncentral-t computation
    ``_nct_power`` is used instead. NaN only when d or n is unusable.
    """
    if not math.isfinite(d) or n < 2:
        return NAN, "none"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(
            TTestPower().power(effect_size=abs(d), nobs=n, alpha=alpha, alternative="two-sided")
        )
    if math.isfinite(p) and 0.0 <= p <= 1.0:
        return p, "statsmodels"
    return _nct_power(d, n, alpha)


def n_for_power(
    d: float, power: float = _TARGET_POWER, alpha: float = _POWER_ALPHA, n_max: int = 10**9
) -> float:
    """Smallest integer n >= 2 whose two-sided one-sample t-test power >= ``power``.

    Integer search (doubling then bisection) on the guarded power function,
    so it works where statsmodels' ``solve_power`` fails to converge (e.g.
    d=20, where the answer is below its search range). Equals
    ``ceil(TTestPower().solve_power(...))`` wherever that converges. Returned
    as a float: NaN when d is 0/undefined or n would exceed ``n_max``.
    """
    if not math.isfinite(d) or d == 0:
        return NAN

    def ok(n: int) -> bool:
        return ttest_power(d, n, alpha)[0] >= power

    lo = 2
    if ok(lo):
        return float(lo)
    hi = 4
    while not ok(hi):
        lo = hi
        hi *= 2
        if hi > n_max:
            return NAN
    while hi - lo > 1:  # invariant: not ok(lo), ok(hi)
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return float(hi)


def cohen_d_ci(d: float, n: int, confidence: float = 0.95) -> tuple[float, float, str]:
    """CI of the one-sample Cohen's d, returned as ``(low, high, method)``.

    Primary: inversion of the noncentral t. With t = d sqrt(n) and df = n - 1,
    find nc_lo, nc_hi with nct.cdf(t; df, nc_lo) = 1 - a/2 and
    nct.cdf(t; df, nc_hi) = a/2, and report nc / sqrt(n) (exact under
    normality). When scipy's nct cannot bracket or the root does not check out
    (extreme |t|, where its cdf goes NaN or inaccurate), the normal
    approximation d +/- z * sqrt(1/n + d^2 / (2n)) is used ("normal-approx").
    """
    if not math.isfinite(d) or n < 2:
        return NAN, NAN, "none"
    a = 1 - confidence
    df = n - 1
    t_obs = d * math.sqrt(n)
    # Scale of nc's sampling error (normal approximation); brackets are found
    # by stepping outward from t_obs by doubling multiples of it, so the
    # search stays near the crossing and away from the far tails where
    # scipy's nct.cdf returns NaN.
    scale = math.sqrt(1.0 + t_obs**2 / (2 * df))

    def f(nc: float, target: float) -> float:
        return float(stats.nct.cdf(t_obs, df, nc)) - target

    def root(target: float, direction: int) -> float:
        # nct.cdf(t; df, nc) decreases in nc: the 1 - a/2 root lies below
        # t_obs (direction -1), the a/2 root above it (direction +1).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            inner, f_inner = t_obs, f(t_obs, target)
            step = scale
            for _ in range(40):
                outer = t_obs + direction * step
                f_outer = f(outer, target)
                if not (math.isfinite(f_inner) and math.isfinite(f_outer)):
                    return NAN
                if f_inner == 0:
                    return inner
                if f_inner * f_outer <= 0:
                    break
                inner, f_inner, step = outer, f_outer, step * 2
            else:
                return NAN
            lo_b, hi_b = sorted((inner, outer))
            try:
                r = optimize.brentq(f, lo_b, hi_b, args=(target,), xtol=1e-12, rtol=1e-12, maxiter=500)
            except (ValueError, RuntimeError):  # NaN mid-search / no convergence
                return NAN
            check = f(r, target)
        return r if math.isfinite(check) and abs(check) < 1e-6 else NAN

    nc_lo, nc_hi = root(1 - a / 2, -1), root(a / 2, +1)
    if math.isfinite(nc_lo) and math.isfinite(nc_hi) and nc_lo <= t_obs <= nc_hi:
        return nc_lo / math.sqrt(n), nc_hi / math.sqrt(n), "noncentral-t"
    z = float(stats.norm.ppf(1 - a / 2))
    se = math.sqrt(1.0 / n + d**2 / (2.0 * n))
    return d - z * se, d + z * se, "normal-approx"


def _join(*notes: str) -> str:
    return "; ".join(dict.fromkeys(n for n in notes if n))


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


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

    ci_low, ci_high, ci_method, ci_note = (
        _mean_ci(x, confidence, n_resamples, seed) if n else (NAN, NAN, "none", "")
    )
    notes.append(ci_note)

    zero_var = _is_zero_variance(x)
    t = t_p = d = NAN
    if zero_var:
        sd = 0.0
        notes.append("zero variance: t-test, Cohen's d and power not testable")
    elif n >= 2:
        res = stats.ttest_1samp(x, baseline, alternative="two-sided")
        t, t_p = float(res.statistic), float(res.pvalue)
        d = (mean - baseline) / sd

    w_stat = w_p = NAN
    if n >= 2:
        w_stat, w_p, w_note = _wilcoxon(x - baseline)
        notes.append(w_note)

    d_lo, d_hi, d_method = cohen_d_ci(d, n, confidence)
    power, power_method = ttest_power(d, n, alpha)
    n80 = n_for_power(d, alpha=alpha)
    if d == 0:
        notes.append("d = 0: n for 80% power undefined")

    return ShareSummary(
        n=n,
        n_dropped=n_dropped,
        mean=mean,
        sd=sd,
        baseline=float(baseline),
        confidence=float(confidence),
        ci_low=ci_low,
        ci_high=ci_high,
        ci_method=ci_method,
        n_resamples=int(n_resamples),
        t=t,
        t_p=t_p,
        wilcoxon_stat=w_stat,
        wilcoxon_p=w_p,
        cohen_d=d,
        d_ci_low=d_lo,
        d_ci_high=d_hi,
        d_ci_method=d_method,
        power=power,
        power_method=power_method,
        n_for_80_power=n80,
        note=_join(*notes),
        alpha=float(alpha),
    )


def collapse_verdict(summary: ShareSummary, threshold: float = 0.80, alpha: float = 0.05,
                     reliance: "Reliance | None" = None, p_holm: float | None = None) -> Verdict:
    """Collapse iff imbalance > threshold AND the deciding test's p < alpha AND the interval lies beyond the threshold.

    ``summary`` must summarise image shares (image / (image + text)) against
    baseline 0.5. Dominant modality is "image" if s̄ > 0.5 else "text"; the
    interval condition is ``ci_low > threshold`` (image) or ``ci_high < 1 -
    threshold`` (text), on the summary's CI (computed at 1 - alpha by the
    callers that decide). A share that is the same on every sample has no
    t-test; with ``reliance`` (``tasks.reliance``) it is decided by tests
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
    ci_low, ci_high, ci_method, ci_note = (
        _mean_ci(diffs, confidence, n_resamples, seed) if n else (NAN, NAN, "none", "")
    )
    notes.append(ci_note)

    t = t_p = w_stat = w_p = perm_p = NAN
    perm_exact = False
    if n >= 2:
        if _is_zero_variance(diffs):
            sd_diff = 0.0
            notes.append("zero variance of differences: paired t-test not testable")
        else:
            res = stats.ttest_rel(xa, xb, alternative="two-sided")
            t, t_p = float(res.statistic), float(res.pvalue)
        w_stat, w_p, w_note = _wilcoxon(diffs)
        notes.append(w_note)
        perm_p, perm_exact = _signflip_pvalue(diffs, n_resamples, seed)
    elif n == 1:
        notes.append("n=1: paired tests not computed")

    return PairedComparison(
        n=n,
        n_dropped=n_dropped,
        mean_a=float(np.mean(xa)) if n else NAN,
        mean_b=float(np.mean(xb)) if n else NAN,
        mean_diff=mean_diff,
        sd_diff=sd_diff,
        confidence=float(confidence),
        ci_low=ci_low,
        ci_high=ci_high,
        ci_method=ci_method,
        n_resamples=int(n_resamples),
        t=t,
        t_p=t_p,
        wilcoxon_stat=w_stat,
        wilcoxon_p=w_p,
        perm_p=perm_p,
        perm_exact=perm_exact,
        note=_join(*notes),
        cohen_dz=mean_diff / sd_diff if math.isfinite(t) else NAN,
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
    mean = float(np.mean(x)) if n else NAN
    t1 = p1 = t2 = p2 = p = ci_lo = ci_hi = NAN
    note = ""
    if n < 2:
        note = f"n={n} < 2: TOST not computed"
    elif _is_zero_variance(x):
        note = "zero variance: TOST not testable"
    else:
        d = DescrStatsW(x)
        pv, (t1, p1, _), (t2, p2, _) = d.ttost_mean(low, high)
        t1, p1, t2, p2, p = float(t1), float(p1), float(t2), float(p2), float(pv)
        ci_lo, ci_hi = (float(v) for v in d.tconfint_mean(alpha=2 * alpha))
    return TostResult(
        n=n,
        n_dropped=n_dropped,
        mean=mean,
        baseline=float(baseline),
        margin=float(margin),
        low=low,
        high=high,
        alpha=float(alpha),
        t_lower=t1,
        p_lower=p1,
        t_upper=t2,
        p_upper=p2,
        p=p,
        ci_low=ci_lo,
        ci_high=ci_hi,
        equivalent=bool(math.isfinite(p) and p < alpha),
        note=note,
    )


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
