"""Known-answer tests for tasks.stats.comparisons: paired comparisons, the sign-flip permutation p, Holm.

Reference values come from scipy/statsmodels called directly in the test, from
independent numerical integration (power and the noncentral-t CI, where scipy's
own nct is what is being guarded against), or are derived by hand in comments.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from tasks.stats.comparisons import HOLM_CORRECTION, HolmResult, PairedComparison, holm, paired_comparison

# Image share of attention; 0.5 is balanced.
# Two models on the same 12 samples; a > b on every sample.
PA = np.array([0.61, 0.55, 0.70, 0.64, 0.58, 0.66, 0.59, 0.72, 0.63, 0.57, 0.68, 0.60])
PB = np.array([0.52, 0.50, 0.61, 0.60, 0.49, 0.58, 0.55, 0.63, 0.52, 0.54, 0.57, 0.58])
# A pair with mixed signs of a - b (for a non-trivial permutation p).
QA = np.array([0.51, 0.48, 0.55, 0.60, 0.47, 0.52, 0.58, 0.49, 0.53, 0.56])
QB = np.array([0.49, 0.50, 0.50, 0.55, 0.48, 0.47, 0.55, 0.50, 0.50, 0.51])


def _se(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / math.sqrt(len(x)))


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


