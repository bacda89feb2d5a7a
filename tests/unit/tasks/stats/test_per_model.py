"""Known-answer tests for tasks.stats.per_model: summaries, collapse verdicts, TOST and balance calls.

Reference values come from scipy/statsmodels called directly in the test, from
independent numerical integration (power and the noncentral-t CI, where scipy's
own nct is what is being guarded against), or are derived by hand in comments.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.power import TTestPower

from tasks.stats import inference
from tasks.stats.comparisons import paired_comparison
from tasks.stats.inference import bootstrap_mean_ci
from tasks.stats.per_model import (
    BalanceCall,
    ShareSummary,
    TostResult,
    Verdict,
    balance_call,
    collapse_verdict,
    summarize,
    tost,
)

# Image share of attention; 0.5 is balanced.
# Clearly text-dominated: every value ~0.02, all 12 below 0.5.
IMB = np.array([0.012, 0.025, 0.018, 0.031, 0.009, 0.022, 0.015, 0.027, 0.020, 0.016, 0.024, 0.019])
# Exactly balanced: six pairs mirrored around 0.5, so the mean is 0.5 (hand).
BAL = np.array([0.42, 0.58, 0.47, 0.53, 0.45, 0.55, 0.49, 0.51, 0.40, 0.60, 0.44, 0.56])


def _se(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / math.sqrt(len(x)))


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

    monkeypatch.setattr(inference.stats, "bootstrap", fake)
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
    lo, hi, method, _ = inference._mean_ci(np.full(10, 0.25), 0.95, 9999, 0)
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
