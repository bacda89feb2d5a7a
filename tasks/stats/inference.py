"""The building blocks of the summaries and comparisons: the bootstrap CI of the mean, the Wilcoxon
signed-rank and sign-flip permutation tests, t-test power and the n it needs, the CI of Cohen's d.

Conventions (non-finite values, zero variance, NaN p, order-free resampling): ``tasks.stats.base``.
"""
from __future__ import annotations

import functools
import math
import warnings
from types import SimpleNamespace

import numpy as np
from scipy import optimize, stats
from statsmodels.stats.power import TTestPower

from tasks.stats.base import NAN, _clean, _is_zero_variance

__all__ = ["bootstrap_mean_ci", "ttest_power", "n_for_power", "cohen_d_ci"]

_POWER_ALPHA = 0.05
_TARGET_POWER = 0.80


def _mean_stat(x, axis=-1):
    return np.mean(x, axis=axis)


def _mean_ci(
    x: np.ndarray, confidence: float, n_resamples: int, seed: int
) -> tuple[float, float, str, str]:
    """BCa bootstrap CI of the mean; percentile fallback when BCa is NaN.

    Returns ``(low, high, method, note)``. No resampling for n < 3 (NaN, "none";
    no note for an empty sample) or for a zero-variance sample (collapses to the
    mean, "degenerate").
    """
    if x.size == 0:
        return NAN, NAN, "none", ""
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
    lo, hi, method, _ = _mean_ci(x, confidence, n_resamples, seed)
    return lo, hi, method


def _mean_ci_fields(x: np.ndarray, confidence: float, n_resamples: int, seed: int) -> tuple[dict, str]:
    """``_mean_ci`` as the fields a summary and a paired comparison both report, and its note.

    The fields: ``confidence``, ``ci_low``, ``ci_high``, ``ci_method``, ``n_resamples``.
    """
    low, high, method, note = _mean_ci(x, confidence, n_resamples, seed)
    return {"confidence": float(confidence), "ci_low": low, "ci_high": high, "ci_method": method,
            "n_resamples": int(n_resamples)}, note


def _wilcoxon_fields(diffs: np.ndarray) -> tuple[dict, str]:
    """Two-sided signed-rank test of ``diffs`` against 0 as the fields a summary and a paired comparison
    both report (``wilcoxon_stat``, ``wilcoxon_p``), and its note.

    NaN below two differences (not computed, no note: the caller says why) and when every difference is zero.
    """
    if diffs.size < 2:
        return {"wilcoxon_stat": NAN, "wilcoxon_p": NAN}, ""
    if not diffs.any():
        return {"wilcoxon_stat": NAN, "wilcoxon_p": NAN}, "all differences zero: Wilcoxon not testable"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        res = stats.wilcoxon(diffs, zero_method="wilcox", alternative="two-sided")
    return {"wilcoxon_stat": float(res.statistic), "wilcoxon_p": float(res.pvalue)}, ""


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

