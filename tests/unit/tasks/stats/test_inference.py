"""Known-answer tests for tasks.stats.inference: t-test power, the n it needs, the CI of Cohen's d.

Reference values come from scipy/statsmodels called directly in the test, from
independent numerical integration (power and the noncentral-t CI, where scipy's
own nct is what is being guarded against), or are derived by hand in comments.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats
from statsmodels.stats.power import TTestPower

from tasks.stats import inference
from tasks.stats.inference import cohen_d_ci, n_for_power, ttest_power
from tasks.stats.per_model import summarize

# Image share of attention; 0.5 is balanced.
# Clearly text-dominated: every value ~0.02, all 12 below 0.5.
IMB = np.array([0.012, 0.025, 0.018, 0.031, 0.009, 0.022, 0.015, 0.027, 0.020, 0.016, 0.024, 0.019])


# ---------------------------------------------------------------- references


def _power_by_integration(d: float, n: int, alpha: float = 0.05) -> float:
    """Two-sided one-sample t power, T = (Z + nc) / (U / sqrt(df)), U ~ chi(df).

    P(reject) = E_U[ Phi(nc - c U) + Phi(-nc - c U) ], c = t_crit / sqrt(df).
    Independent of scipy's nct (whose far tail is NaN at large nc).
    """
    df = n - 1
    nc = abs(d) * math.sqrt(n)
    c = stats.t.ppf(1 - alpha / 2, df) / math.sqrt(df)
    chi = stats.chi(df)

    def integrand(u):
        return (stats.norm.cdf(nc - c * u) + stats.norm.cdf(-nc - c * u)) * chi.pdf(u)

    val, _ = integrate.quad(integrand, 0, chi.ppf(1 - 1e-16), limit=400, epsabs=1e-13)
    return val


def _nct_cdf_by_integration(t: float, df: int, nc: float) -> float:
    """P(T <= t) for T ~ nct(df, nc) = E_U[ Phi(t U / sqrt(df) - nc) ], U ~ chi(df)."""
    chi = stats.chi(df)

    def integrand(u):
        return stats.norm.cdf(t * u / math.sqrt(df) - nc) * chi.pdf(u)

    hi = chi.ppf(1 - 1e-16)
    val, _ = integrate.quad(integrand, 0, hi, limit=400, epsabs=1e-13)
    return val


# ---------------------------------------------------------------- power


def test_power_never_nan_for_huge_effects():
    power, method = ttest_power(20.0, 64)
    assert power == 1.0 and not math.isnan(power)
    for d, n in [(2.0, 64), (5.0, 64), (3.0, 20), (0.3, 1000), (50.0, 2), (-20.0, 64)]:
        p, _ = ttest_power(d, n)
        assert math.isfinite(p) and 0.0 <= p <= 1.0


@pytest.mark.parametrize(
    "d,n",
    [(8.0, 2), (20.0, 2), (0.3, 1000), (2.0, 20), (3.0, 10), (10.0, 3)],
)
def test_power_matches_integration_where_statsmodels_fails(d, n):
    # statsmodels 0.15 returns NaN for all of these (scipy's nct.cdf goes NaN
    # in the wrong-side tail); note (8, 2) has power ~0.63, not ~1, so
    # clipping NaN to 1 would be wrong.
    p, _ = ttest_power(d, n)
    assert p == pytest.approx(_power_by_integration(d, n), abs=1e-9)


@pytest.mark.parametrize("d,n", [(0.2, 50), (0.5, 20), (0.8, 10), (1.0, 5), (0.1, 300)])
def test_power_matches_statsmodels_where_finite(d, n):
    ref = TTestPower().power(effect_size=d, nobs=n, alpha=0.05, alternative="two-sided")
    assert math.isfinite(ref)
    p, method = ttest_power(d, n)
    assert method == "statsmodels"
    assert p == pytest.approx(ref, rel=1e-12)
    assert p == pytest.approx(_power_by_integration(d, n), abs=1e-9)
    # the guarded path agrees with statsmodels too
    assert inference._nct_power(d, n, 0.05)[0] == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("d", [0.2, 0.5, 0.8, 1.0, 2.0, -0.5])
def test_n_for_power_is_ceiling_of_statsmodels_solution(d):
    ref = TTestPower().solve_power(effect_size=abs(d), power=0.8, alpha=0.05, alternative="two-sided")
    n = n_for_power(d)
    assert n == math.ceil(ref)
    assert ttest_power(d, int(n))[0] >= 0.8 > ttest_power(d, int(n) - 1)[0]


def test_n_for_power_huge_and_zero_effect():
    # statsmodels' solve_power fails to converge here; power at n=2 is ~0.97.
    assert n_for_power(20.0) == 2.0
    assert ttest_power(20.0, 2)[0] == pytest.approx(_power_by_integration(20.0, 2), abs=1e-9)
    assert math.isnan(n_for_power(0.0))
    assert math.isnan(n_for_power(float("nan")))


# ---------------------------------------------------------------- Cohen's d CI


@pytest.mark.parametrize("d,n", [(0.5, 20), (-1.75, 3), (2.0, 64), (float(summarize(IMB).cohen_d), 12)])
def test_cohen_d_ci_inverts_the_noncentral_t(d, n):
    lo, hi, method = cohen_d_ci(d, n, 0.95)
    assert method == "noncentral-t"
    assert lo < d < hi
    t = d * math.sqrt(n)
    # Independent check of the defining equations by numerical integration.
    assert _nct_cdf_by_integration(t, n - 1, lo * math.sqrt(n)) == pytest.approx(0.975, abs=1e-6)
    assert _nct_cdf_by_integration(t, n - 1, hi * math.sqrt(n)) == pytest.approx(0.025, abs=1e-6)


def test_cohen_d_ci_close_to_normal_approximation_for_large_n():
    d, n = 0.3, 2000
    lo, hi, _ = cohen_d_ci(d, n)
    se = math.sqrt(1 / n + d**2 / (2 * n))
    assert lo == pytest.approx(d - 1.959964 * se, abs=2e-3)
    assert hi == pytest.approx(d + 1.959964 * se, abs=2e-3)


