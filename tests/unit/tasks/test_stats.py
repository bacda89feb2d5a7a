"""Known-answer tests for tasks.stats.

Reference values come from scipy/statsmodels called directly in the test, from
independent numerical integration (power and the noncentral-t CI, where scipy's
own nct is what is being guarded against), or are derived by hand in comments.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from tasks.stats import (
    HOLM_CORRECTION,
    BalanceCall,
    HolmResult,
    PairedComparison,
    ShareSummary,
    TostResult,
    Verdict,
    balance_call,
    bootstrap_mean_ci,
    cohen_d_ci,
    collapse_verdict,
    holm,
    n_for_power,
    paired_comparison,
    summarize,
    tost,
    ttest_power,
)
import tasks.stats as stats_mod

# Image share of attention; 0.5 is balanced.
# Clearly text-dominated: every value ~0.02, all 12 below 0.5.
IMB = np.array([0.012, 0.025, 0.018, 0.031, 0.009, 0.022, 0.015, 0.027, 0.020, 0.016, 0.024, 0.019])
# Exactly balanced: six pairs mirrored around 0.5, so the mean is 0.5 (hand).
BAL = np.array([0.42, 0.58, 0.47, 0.53, 0.45, 0.55, 0.49, 0.51, 0.40, 0.60, 0.44, 0.56])
# Two models on the same 12 samples; a > b on every sample.
PA = np.array([0.61, 0.55, 0.70, 0.64, 0.58, 0.66, 0.59, 0.72, 0.63, 0.57, 0.68, 0.60])
PB = np.array([0.52, 0.50, 0.61, 0.60, 0.49, 0.58, 0.55, 0.63, 0.52, 0.54, 0.57, 0.58])
# A pair with mixed signs of a - b (for a non-trivial permutation p).
QA = np.array([0.51, 0.48, 0.55, 0.60, 0.47, 0.52, 0.58, 0.49, 0.53, 0.56])
QB = np.array([0.49, 0.50, 0.50, 0.55, 0.48, 0.47, 0.55, 0.50, 0.50, 0.51])


def _se(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / math.sqrt(len(x)))


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


# ---------------------------------------------------------------- summarize


def test_summarize_imbalanced_known_answers():
    s = summarize(IMB)
    assert isinstance(s, ShareSummary)
    assert s.n == 12 and s.n_dropped == 0
    assert s.mean == pytest.approx(0.238 / 12, rel=1e-12)  # hand: sum = 0.238
    assert s.sd == pytest.approx(np.std(IMB, ddof=1), rel=1e-12)
    ref = stats.ttest_1samp(IMB, 0.5)
    assert s.t == pytest.approx(ref.statistic, rel=1e-12)
    assert s.t_p == pytest.approx(ref.pvalue, rel=1e-9)
    # All 12 differences negative, no ties: exact signed-rank p = 2 / 2**12.
    assert s.wilcoxon_stat == 0.0
    assert s.wilcoxon_p == pytest.approx(2 / 2**12, rel=1e-12)
    assert s.cohen_d == pytest.approx((s.mean - 0.5) / s.sd, rel=1e-12)
    assert s.cohen_d < -70  # huge effect: the regime where statsmodels misbehaves
    assert s.power == 1.0
    assert s.n_for_80_power == 2.0
    assert s.ci_method == "BCa" and s.note == ""


def test_bca_ci_matches_scipy_bootstrap_with_same_seed():
    # summarize bootstraps the *sorted* sample so that the seeded CI does not
    # depend on the order of the samples; the reference does the same.
    for x in (IMB, BAL):
        s = summarize(x, n_resamples=9999, seed=7)
        ref = stats.bootstrap(
            (np.sort(x),), lambda v, axis: np.mean(v, axis=axis), vectorized=True,
            n_resamples=9999, method="BCa", confidence_level=0.95,
            rng=np.random.default_rng(7),
        ).confidence_interval
        assert s.ci_low == pytest.approx(ref.low, rel=1e-12)
        assert s.ci_high == pytest.approx(ref.high, rel=1e-12)


def test_bca_ci_endpoints_are_stable_and_near_normal_interval():
    # Measured Monte-Carlo SD of each endpoint at B = 9999 is ~0.035 SE for
    # these data, so 0.2 SE between seeds is ~6 MC SDs. For a mean of 12 fairly
    # symmetric values BCa sits close to mean +/- 1.96 SE (measured ~0.09 SE
    # off); 0.3 SE allows skewness and MC error but catches a wrong level
    # (a 90% interval is 0.32 SE narrower per side) or a wrong statistic.
    for x in (IMB, BAL):
        se = _se(x)
        a, b = summarize(x, seed=0), summarize(x, seed=1)
        assert abs(a.ci_low - b.ci_low) < 0.2 * se
        assert abs(a.ci_high - b.ci_high) < 0.2 * se
        assert a.ci_low < a.mean < a.ci_high
        z = stats.norm.ppf(0.975)
        assert a.ci_low == pytest.approx(x.mean() - z * se, abs=0.3 * se)
        assert a.ci_high == pytest.approx(x.mean() + z * se, abs=0.3 * se)
    assert summarize(BAL, seed=3) == summarize(BAL, seed=3)  # seeded: reproducible


def test_summarize_balanced_known_answers():
    s = summarize(BAL)
    assert s.mean == pytest.approx(0.5, abs=1e-15)
    assert s.t == pytest.approx(0.0, abs=1e-12)
    assert s.t_p == pytest.approx(1.0, abs=1e-12)
    ref_w = stats.wilcoxon(BAL - 0.5)
    assert s.wilcoxon_p == pytest.approx(ref_w.pvalue, rel=1e-12)
    assert s.wilcoxon_p > 0.9
    assert s.cohen_d == pytest.approx(0.0, abs=1e-12)
    # d = 0: the t-test rejects with probability alpha.
    assert s.power == pytest.approx(0.05, abs=1e-9)
    assert math.isnan(s.n_for_80_power)
    # d CI symmetric around 0.
    assert s.d_ci_method == "noncentral-t"
    assert s.d_ci_low == pytest.approx(-s.d_ci_high, rel=1e-8)


def test_nan_values_dropped_and_counted():
    x = np.r_[IMB, np.nan, np.nan, np.inf]
    s = summarize(x)
    assert s.n == 12 and s.n_dropped == 3
    assert s.mean == pytest.approx(IMB.mean(), rel=1e-12)
    assert s.t_p == pytest.approx(stats.ttest_1samp(IMB, 0.5).pvalue, rel=1e-9)


def test_as_dict_is_flat_numeric_and_params_hold_strings():
    s = summarize(BAL)
    d = s.as_dict(prefix="m/")
    assert d and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in d.values())
    assert d["m/n"] == 12 and isinstance(d["m/n"], int)
    assert "m/note" not in d and "m/ci_method" not in d
    assert s.as_params()["ci_method"] == "BCa"
    v = collapse_verdict(s).as_dict()
    assert v["collapsed"] == 0 and isinstance(v["collapsed"], int)
    assert "dominant" not in v


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
    assert stats_mod._nct_power(d, n, 0.05)[0] == pytest.approx(ref, abs=1e-12)


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


# ---------------------------------------------------------------- degenerate


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "values",
    [
        np.full(10, 0.3),  # constant, differs from baseline (float noise in SD)
        np.full(10, 0.5),  # constant at baseline
        np.array([0.2, 0.3]),  # n = 2
        np.array([0.2]),  # n = 1
        np.array([]),  # n = 0
        np.array([np.nan, np.nan]),  # all dropped
    ],
)
def test_degenerate_inputs_do_not_crash(values):
    s = summarize(values)
    v = collapse_verdict(s)
    assert v.collapsed is False
    assert s.note  # always explains itself
    d = s.as_dict()
    assert set(d) >= {"n", "mean", "ci_low", "ci_high", "t_p", "power"}
    tost(values)


def test_constant_sample_is_not_testable_not_significant():
    # scipy.stats.ttest_1samp(np.full(10, 0.3), 0.5) reports p ~ 1e-141 because
    # the computed SD is ~1e-17 rather than 0; we report NaN instead.
    s = summarize(np.full(10, 0.3))
    assert s.sd == 0.0
    assert math.isnan(s.t_p) and math.isnan(s.cohen_d) and math.isnan(s.power)
    assert s.ci_low == s.ci_high == pytest.approx(0.3)
    assert s.ci_method == "degenerate"
    assert "zero variance" in s.note
    v = collapse_verdict(s)
    assert not v.significant and "not testable" in v.reason
    s5 = summarize(np.full(10, 0.5))
    assert math.isnan(s5.wilcoxon_p) and "all differences zero" in s5.note


def test_small_n_ci_is_nan_with_note():
    s = summarize(np.array([0.2, 0.3]))
    assert math.isnan(s.ci_low) and math.isnan(s.ci_high) and s.ci_method == "none"
    assert "n=2 < 3" in s.note
    assert s.t_p == pytest.approx(stats.ttest_1samp([0.2, 0.3], 0.5).pvalue, rel=1e-12)


def test_bca_failure_falls_back_to_percentile(monkeypatch):
    real = stats.bootstrap

    def fake(data, statistic, **kw):
        res = real(data, statistic, **kw)
        if kw.get("method") == "BCa":
            return dataclasses.replace(
                res, confidence_interval=type(res.confidence_interval)(np.nan, np.nan)
            )
        return res

    monkeypatch.setattr(stats_mod.stats, "bootstrap", fake)
    s = summarize(BAL, seed=5)
    monkeypatch.undo()
    ref = stats.bootstrap(
        (np.sort(BAL),), lambda v, axis: np.mean(v, axis=axis), vectorized=True,
        method="percentile", rng=np.random.default_rng(5),
    ).confidence_interval
    assert s.ci_method == "percentile"
    assert s.ci_low == pytest.approx(ref.low, rel=1e-12)
    assert s.ci_high == pytest.approx(ref.high, rel=1e-12)
    assert "percentile" in s.note


def test_real_bca_degeneracy_is_what_the_fallback_handles():
    # Exactly constant data makes scipy's BCa NaN (DegenerateDataWarning);
    # _mean_ci short-circuits zero variance before that can happen.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = stats.bootstrap((np.full(10, 0.25),), lambda v, axis: np.mean(v, axis=axis),
                              vectorized=True, method="BCa", rng=np.random.default_rng(0))
    assert math.isnan(ref.confidence_interval.low)
    lo, hi, method, _ = stats_mod._mean_ci(np.full(10, 0.25), 0.95, 9999, 0)
    assert (lo, hi, method) == (0.25, 0.25, "degenerate")


# ---------------------------------------------------------------- verdict


def test_collapse_verdict_true_for_text_and_image_collapse():
    v = collapse_verdict(summarize(IMB))
    assert isinstance(v, Verdict)
    assert v.collapsed and v.dominant == "text"
    assert v.imbalance == pytest.approx(1 - IMB.mean())
    assert v.imbalance_exceeds and v.significant and v.ci_beyond
    assert v.reason.startswith("collapsed toward text")
    w = collapse_verdict(summarize(1 - IMB))
    assert w.collapsed and w.dominant == "image"
    assert w.share == pytest.approx(1 - IMB.mean())


def test_collapse_verdict_false_for_balanced():
    v = collapse_verdict(summarize(BAL))
    assert not v.collapsed
    assert not v.imbalance_exceeds and not v.significant and not v.ci_beyond
    assert v.reason.count("failed") == 3


def test_collapse_verdict_each_condition_is_required():
    base = summarize(1 - IMB)  # collapsed toward image
    assert collapse_verdict(base).collapsed
    # imbalance and p fine but the CI reaches below the threshold
    ci_crosses = dataclasses.replace(base, mean=0.85, ci_low=0.79, ci_high=0.9, t_p=1e-6)
    v = collapse_verdict(ci_crosses)
    assert v.imbalance_exceeds and v.significant and not v.ci_beyond and not v.collapsed
    assert "CI low 0.79 > 0.8 (BCa) failed" in v.reason
    # p not below alpha
    v = collapse_verdict(dataclasses.replace(base, t_p=0.06))
    assert not v.significant and not v.collapsed
    # imbalance exactly at the threshold is not "beyond" it (strict >)
    v = collapse_verdict(dataclasses.replace(base, mean=0.8, ci_low=0.81))
    assert not v.imbalance_exceeds and not v.collapsed
    # text side uses the CI's upper end
    v = collapse_verdict(dataclasses.replace(summarize(IMB), mean=0.1, ci_low=0.05, ci_high=0.21))
    assert v.dominant == "text" and not v.ci_beyond and not v.collapsed
    v = collapse_verdict(dataclasses.replace(summarize(IMB), mean=0.1, ci_low=0.05, ci_high=0.19))
    assert v.ci_beyond and v.collapsed
    # a stricter threshold flips the verdict
    assert not collapse_verdict(summarize(IMB), threshold=0.99).collapsed
    # the p-value must be a test against balance
    with pytest.raises(ValueError):
        collapse_verdict(summarize(IMB, baseline=0.4))


# ---------------------------------------------------------------- paired


def _exact_signflip_p(a: np.ndarray, b: np.ndarray) -> float:
    """scipy's two-sided definition, 2 * min(P(T <= t), P(T >= t)), by enumeration."""
    d = a - b
    obs = d.mean()
    signs = np.array(list(itertools.product([1.0, -1.0], repeat=len(d))))
    null = (signs * d).mean(axis=1)
    eps = 1e-12 * max(1.0, abs(obs))
    less = np.mean(null <= obs + eps)
    greater = np.mean(null >= obs - eps)
    return min(1.0, 2 * min(less, greater))


def test_paired_comparison_known_answers():
    r = paired_comparison(PA, PB)
    assert isinstance(r, PairedComparison)
    assert r.n == 12 and r.n_dropped == 0
    assert r.mean_diff == pytest.approx(0.84 / 12, rel=1e-12)  # hand: sum(a - b) = 0.84
    ref = stats.ttest_rel(PA, PB)
    assert r.t == pytest.approx(ref.statistic, rel=1e-12)
    assert r.t_p == pytest.approx(ref.pvalue, rel=1e-9)
    # every a > b: exact Wilcoxon p = 2 / 2**12, and the only sign flips as
    # extreme as the data are the identity and its mirror: perm p = 2 / 2**12.
    assert r.wilcoxon_p == pytest.approx(2 / 2**12, rel=1e-12)
    assert r.perm_exact and r.perm_p == pytest.approx(2 / 2**12, rel=1e-9)
    ref_ci = stats.bootstrap(
        (PA, PB), lambda x, y, axis: np.mean(x - y, axis=axis), paired=True,
        vectorized=True, method="BCa", rng=np.random.default_rng(0),
    ).confidence_interval
    se = _se(PA - PB)
    assert r.ci_low == pytest.approx(ref_ci.low, abs=0.2 * se)
    assert r.ci_high == pytest.approx(ref_ci.high, abs=0.2 * se)
    assert r.ci_low > 0


def test_paired_permutation_mixed_signs_matches_enumeration():
    r = paired_comparison(QA, QB)
    assert r.perm_exact  # 2**10 <= 9999
    assert r.perm_p == pytest.approx(_exact_signflip_p(QA, QB), rel=1e-9)
    assert r.wilcoxon_p == pytest.approx(stats.wilcoxon(QA - QB).pvalue, rel=1e-12)
    assert r.t_p == pytest.approx(stats.ttest_rel(QA, QB).pvalue, rel=1e-9)


def test_paired_degenerate_and_validation():
    same = paired_comparison(PA, PA)
    assert math.isnan(same.t_p) and math.isnan(same.wilcoxon_p)
    assert same.perm_p == 1.0 and same.ci_low == same.ci_high == 0.0
    r = paired_comparison(np.r_[PA, np.nan, 0.4], np.r_[PB, 0.3, np.nan])
    assert r.n == 12 and r.n_dropped == 2
    assert r.t_p == pytest.approx(stats.ttest_rel(PA, PB).pvalue, rel=1e-9)
    with pytest.raises(ValueError):
        paired_comparison(PA, PB[:-1])


# ---------------------------------------------------------------- Holm


def test_holm_known_answer_and_not_holm_sidak():
    p = [0.01, 0.04, 0.03, 0.005]
    r = holm(p)
    assert isinstance(r, HolmResult)
    # hand: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> 0.06 (monotone)
    assert r.adjusted == pytest.approx((0.03, 0.06, 0.06, 0.02), rel=1e-12)
    assert r.reject == (True, False, False, True)
    ref = multipletests(p, method="holm")[1]
    assert r.adjusted == pytest.approx(tuple(ref), rel=1e-12)
    sidak = multipletests(p, method="hs")[1]  # statsmodels' default family
    assert r.adjusted[3] != pytest.approx(sidak[3], rel=1e-6)  # 0.02 vs 0.0199


def test_holm_is_statsmodels_holm_on_random_families_with_ties():
    rng = np.random.default_rng(3)
    for m in (1, 2, 5, 17):
        p = np.round(rng.uniform(0, 0.2, m), 3)  # rounding makes ties
        r = holm(p, alpha=0.05)
        rej, adj, _, _ = multipletests(p, alpha=0.05, method="holm")
        assert r.reject == tuple(bool(v) for v in rej)
        assert np.array_equal(np.asarray(r.adjusted), adj)


def test_holm_names_and_nan():
    r = holm({"clip": 0.01, "blip": float("nan"), "llava": 0.04})
    assert r.names == ("clip", "blip", "llava")
    assert r.adjusted[0] == pytest.approx(0.02) and r.adjusted[2] == pytest.approx(0.04)
    assert math.isnan(r.adjusted[1]) and r.reject[1] is False
    d = r.as_dict()
    assert d["reject_holm_clip"] == 1 and math.isnan(d["p_holm_blip"])
    assert holm([]).adjusted == ()


# ---------------------------------------------------------------- TOST


def test_tost_balanced_hand_derived():
    r = tost(BAL, baseline=0.5, margin=0.05)
    assert isinstance(r, TostResult)
    se = _se(BAL)
    t_low = (BAL.mean() - 0.45) / se
    assert r.t_lower == pytest.approx(t_low, rel=1e-9)
    assert r.p_lower == pytest.approx(stats.t.sf(t_low, 11), rel=1e-9)
    assert r.p == pytest.approx(max(r.p_lower, r.p_upper), rel=1e-12)
    assert r.equivalent and r.p < 0.05
    # Equivalent iff the 90% t-interval lies inside (0.45, 0.55).
    lo, hi = stats.t.interval(0.90, 11, loc=BAL.mean(), scale=se)
    assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), rel=1e-9)
    assert 0.45 < lo and hi < 0.55
    narrow = tost(BAL, margin=0.02)  # 90% CI (0.466, 0.534) sticks out of (0.48, 0.52)
    assert not narrow.equivalent and narrow.p > 0.05


def test_tost_imbalanced_and_degenerate():
    r = tost(IMB)
    assert not r.equivalent and r.p == pytest.approx(1.0, abs=1e-12)
    c = tost(np.full(8, 0.5))  # zero variance: not testable, never "balanced"
    assert math.isnan(c.p) and not c.equivalent and "zero variance" in c.note
    with pytest.raises(ValueError):
        tost(BAL, margin=0.0)


# ---------------------------------------------------------------- Holm's name


def test_holm_exposes_the_correction_it_applied():
    r = holm({"a": 0.01, "b": float("nan"), "c": 0.02})
    assert r.method == "holm" and r.correction == HOLM_CORRECTION
    assert "Holm" in r.correction and "step-down Bonferroni" in r.correction
    assert r.as_params("x/") == {"x/correction": HOLM_CORRECTION, "x/correction_method": "holm"}
    assert r.family_size == 2  # the NaN is outside the family
    assert r.as_dict()["holm_family_size"] == 2
    # family of 2: 0.01 * 2 = 0.02, then max(0.02, 0.02 * 1) = 0.02
    assert r.adjusted[0] == pytest.approx(0.02) and r.adjusted[2] == pytest.approx(0.02)


# ---------------------------------------------------------------- power at the caller's alpha

# Moderately above balance (d ~ 1.2): power well inside (0, 1) at both levels.
# No ties among |x - 0.5| (LEAN too), so scipy's Wilcoxon is its exact table
# rather than its slow permutation fallback for n <= 13 with ties.
MOD = np.array([0.521, 0.612, 0.474, 0.583, 0.552, 0.634, 0.493, 0.571, 0.605, 0.516, 0.547, 0.598])


@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_power_and_n80_follow_the_callers_alpha(alpha):
    s = summarize(MOD, alpha=alpha)
    d = (MOD.mean() - 0.5) / np.std(MOD, ddof=1)
    assert s.cohen_d == pytest.approx(d, rel=1e-12) and s.alpha == alpha
    ref = TTestPower().power(effect_size=d, nobs=12, alpha=alpha, alternative="two-sided")
    assert s.power == pytest.approx(ref, rel=1e-9)
    n80 = TTestPower().solve_power(effect_size=d, power=0.8, alpha=alpha, alternative="two-sided")
    assert s.n_for_80_power == math.ceil(n80)
    assert summarize(MOD, alpha=0.01).power < summarize(MOD, alpha=0.05).power


def test_bootstrap_mean_ci_is_the_summary_ci():
    s = summarize(MOD, n_resamples=2999, seed=4)
    assert bootstrap_mean_ci(MOD, 0.95, 2999, 4) == (s.ci_low, s.ci_high, "BCa")
    assert bootstrap_mean_ci([np.nan]) == (pytest.approx(np.nan, nan_ok=True),) * 2 + ("none",)


# ---------------------------------------------------------------- sign-flip Monte Carlo


def test_signflip_monte_carlo_all_one_sign_known_answer():
    # n = 30 > log2(9999): Monte Carlo. Only the identity (and its mirror,
    # probability 2 / 2**30) is as extreme as data that are all positive, so
    # both tails count just the +1 correction: p = 2 * 1 / (9999 + 1).
    a = PA[:10].repeat(3) + np.linspace(0, 0.01, 30)
    b = a - np.linspace(0.01, 0.1, 30)
    r = paired_comparison(a, b)
    assert not r.perm_exact
    assert r.perm_p == pytest.approx(2 / 10000, rel=1e-12)


def test_signflip_monte_carlo_matches_scipy_within_mc_error():
    rng = np.random.default_rng(11)
    a = rng.uniform(0.3, 0.7, 40)
    b = a - rng.normal(0.012, 0.05, 40)  # a modest shift: p ~ 0.1
    r = paired_comparison(a, b, n_resamples=9999, seed=3)
    ref = stats.permutation_test(
        (a - b,), lambda d, axis: np.mean(d, axis=axis), permutation_type="samples",
        vectorized=True, n_resamples=9999, rng=np.random.default_rng(5),
    ).pvalue
    assert 0.01 < ref < 0.5
    # Two independent Monte-Carlo estimates of the same p: each has SD
    # ~2 sqrt(p(1-p)/(2 B)) (two-sided doubles a one-tail proportion), their
    # difference sqrt(2) times that; 5 such SDs never fails by chance.
    sd = 2 * math.sqrt(ref / 2 * (1 - ref / 2) / 9999)
    assert abs(r.perm_p - ref) < 5 * math.sqrt(2) * sd
    # and the same p as the t-test would give, roughly (n = 40, near-normal data)
    assert r.perm_p == pytest.approx(r.t_p, abs=0.05)


def test_paired_effect_size_dz():
    r = paired_comparison(QA, QB)
    d = QA - QB
    assert r.cohen_dz == pytest.approx(d.mean() / np.std(d, ddof=1), rel=1e-12)
    assert math.isnan(paired_comparison(PA, PA).cohen_dz)


# ---------------------------------------------------------------- balance call

# Clearly toward the image but far from the 0.8 threshold.
LEAN = np.array([0.641, 0.662, 0.653, 0.674, 0.635, 0.668, 0.647, 0.681, 0.656, 0.664, 0.622, 0.677])
# Wide spread around 0.53: neither different from 0.5 nor provably within 0.5 +/- 0.05.
NOISY = np.array([0.31, 0.72, 0.45, 0.66, 0.38, 0.695, 0.52, 0.51])


def _call(x, margin=0.05):
    s = summarize(x, n_resamples=999)
    return balance_call(s, tost(x, margin=margin), collapse_verdict(s)), s


def test_balance_call_labels():
    c, _ = _call(IMB)
    assert isinstance(c, BalanceCall)
    assert (c.label, c.dominant, c.collapsed) == ("collapsed", "text", True)
    c, _ = _call(BAL)
    assert (c.label, c.equivalent, c.differs) == ("balanced", True, False)
    c, s = _call(LEAN)
    assert s.t_p < 0.05 and not tost(LEAN).equivalent  # fixture check (scipy/statsmodels)
    assert (c.label, c.dominant, c.collapsed) == ("imbalanced", "image", False)
    c, s = _call(NOISY)
    assert stats.ttest_1samp(NOISY, 0.5).pvalue > 0.05 and not tost(NOISY).equivalent
    assert c.label == "not shown to differ" and not c.equivalent
    assert "not evidence of balance" in c.reason
    c, _ = _call(np.full(9, 0.7))
    assert c.label == "not testable"
    assert c.as_dict()["equivalent"] == 0 and "label" in c.as_params()


def test_balance_call_significant_but_negligible_difference_is_balanced():
    # n = 400 around 0.51, sd 0.02: t-test p ~ 1e-20, yet the 90% CI of the
    # mean (~0.508..0.512) lies well inside 0.45..0.55.
    x = 0.51 + 0.02 * stats.norm.ppf((np.arange(400) + 0.5) / 400)
    c, s = _call(x)
    assert s.t_p < 1e-10 and tost(x).equivalent
    assert c.label == "balanced" and c.differs and "negligible" in c.reason


def test_balance_call_without_verdict_and_baseline_mismatch():
    s = summarize(LEAN, baseline=0.6, n_resamples=999)
    c = balance_call(s, tost(LEAN, baseline=0.6, margin=0.1), None)
    assert c.label == "balanced" and not c.collapsed  # within 0.6 +/- 0.1
    with pytest.raises(ValueError, match="same balanced value"):
        balance_call(s, tost(LEAN, baseline=0.5), None)


# ---------------------------------------------------------------- properties

# Scores on a 1/1024 grid and shifts on the same grid: every sum of up to a
# few thousand such numbers is exact in float64, so the bootstrap's
# comparisons (resample mean vs observed mean, which set BCa's bias
# correction) come out identical after the shift, and the endpoints agree to
# rounding (1e-9 is ~1e7 ulps of slack) rather than to Monte-Carlo error.
_grid = st.integers(0, 1024).map(lambda k: k / 1024)


@settings(max_examples=25, deadline=None)
@given(st.lists(_grid, min_size=14, max_size=40), st.integers(-512, 512).map(lambda k: k / 1024))
def test_shift_moves_mean_and_ci_by_the_constant(values, c):
    # n >= 14: scipy's Wilcoxon with ties is an (exact but slow) permutation
    # test below that; the property concerns the mean and its CI.
    x = np.array(values)
    a, b = summarize(x, n_resamples=999, seed=1), summarize(x + c, n_resamples=999, seed=1)
    assert b.mean == pytest.approx(a.mean + c, abs=1e-12)
    assert b.ci_low == pytest.approx(a.ci_low + c, abs=1e-9)
    assert b.ci_high == pytest.approx(a.ci_high + c, abs=1e-9)
    assert b.sd == pytest.approx(a.sd, rel=1e-9, abs=1e-15)
    assert b.ci_method == a.ci_method


_share = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=25, deadline=None)
@given(st.lists(_share, min_size=14, max_size=40), st.randoms(use_true_random=False))
def test_permuting_samples_changes_nothing(values, random):
    x = np.array(values)
    y = x.copy()
    random.shuffle(y)
    a, b = summarize(x, n_resamples=999), summarize(y, n_resamples=999)
    # The CI is computed on the sorted sample: bit-identical.
    assert (a.ci_low, a.ci_high, a.ci_method) == (b.ci_low, b.ci_high, b.ci_method) or (
        math.isnan(a.ci_low) and math.isnan(b.ci_low))
    # Everything else up to the rounding of sums taken in another order.
    for name in ("mean", "sd", "t_p", "wilcoxon_p", "cohen_d", "power"):
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-7, abs=1e-12, nan_ok=True), name
    pa = paired_comparison(x, x[::-1] * 0.9, n_resamples=999)
    order = np.array(random.sample(range(len(x)), len(x)))
    pb = paired_comparison(x[order], (x[::-1] * 0.9)[order], n_resamples=999)
    assert (pa.ci_low, pa.ci_high, pa.perm_p) == (pb.ci_low, pb.ci_high, pb.perm_p) or math.isnan(pa.ci_low)
    assert pb.t_p == pytest.approx(pa.t_p, rel=1e-7, abs=1e-12, nan_ok=True)


@settings(max_examples=40, deadline=None)
@given(st.lists(_share, min_size=3, max_size=40), st.integers(0, 2**16))
def test_ci_always_contains_the_mean(values, seed):
    x = np.array(values)
    lo, hi, method = bootstrap_mean_ci(x, 0.95, 999, seed)
    m = float(np.mean(x))
    # A degenerate sample's CI is the mean itself; tolerance covers the
    # rounding of a resample mean that equals the observed one.
    assert lo <= m + 1e-12 and m - 1e-12 <= hi, (lo, m, hi, method)
