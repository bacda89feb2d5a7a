"""Per-sample reliance: exact tests that stay valid at zero variance, and the calls they lead to."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from tasks.stats import per_model
from tasks.stats.reliance import _exact_ci, reliance

N = 40


def _call(x):
    s = per_model.summarize(x, n_resamples=999)
    r = reliance(x, n_resamples=999)
    v = per_model.collapse_verdict(s, reliance=r)
    return per_model.balance_call(s, per_model.tost(x), v, reliance=r), v, r


@pytest.mark.parametrize("share, side", [(1.0, "image"), (0.0, "text")])
def test_a_share_that_is_the_same_on_every_sample_is_collapse_decided_by_the_exact_test(share, side):
    call, verdict, r = _call(np.full(N, share))
    assert r.zero_variance and verdict.test == per_model.SIGN_TEST
    assert verdict.p == pytest.approx(2 * 0.5**N)  # exact two-sided sign test, all N on one side
    assert verdict.ci_low == pytest.approx((0.05 / 2) ** (1 / N))  # Clopper–Pearson lower bound of N/N at 95 %
    assert verdict.collapsed and verdict.dominant == side and call.label == "collapsed"


def test_half_image_half_text_is_per_sample_dominance_not_balance():
    x = np.r_[np.ones(N // 2), np.zeros(N // 2)]
    call, verdict, r = _call(x)
    assert not verdict.collapsed and r.direction == "mixed" and r.frac_beyond == 1
    assert r.dominance_p == pytest.approx(scipy_stats.binomtest(N, N, 0.5, alternative="greater").pvalue)
    assert call.label == "per-sample dominance" and call.direction == "mixed"
    lo, hi = scipy_stats.binomtest(N // 2, N).proportion_ci(0.95, method="exact")
    assert (r.frac_image_ci_low, r.frac_image_ci_high) == pytest.approx((lo, hi))


def test_balanced_needs_the_mean_and_the_samples_within_the_margin():
    rng = np.random.default_rng(1)
    call, _, r = _call(np.clip(0.5 + rng.normal(0, 0.02, N), 0, 1))
    assert call.label == "balanced" and r.within_margin
    # mean 0.5 but every sample at 0.35 or 0.65: equivalence of the mean alone would call it balanced
    call, _, r = _call(np.r_[np.full(N // 2, 0.35), np.full(N // 2, 0.65)] + rng.normal(0, 1e-3, N))
    assert per_model.tost(np.r_[np.full(N // 2, 0.35), np.full(N // 2, 0.65)] + rng.normal(0, 1e-3, N), margin=0.2).equivalent
    assert not r.within_margin and call.label != "balanced"


def test_exactly_balanced_on_every_sample_is_balanced_by_exact_tests():
    call, verdict, r = _call(np.full(N, 0.5))
    assert r.sign_p == 1 and r.equivalence_sign_p == pytest.approx(0.5**N)
    assert not verdict.collapsed and call.label == "balanced"


def test_cis_use_the_callers_alpha():
    r = reliance(np.r_[np.ones(10), np.full(10, 0.5)], alpha=0.01, n_resamples=999)
    lo, hi = scipy_stats.binomtest(10, 20).proportion_ci(0.99, method="exact")
    assert (r.frac_image_ci_low, r.frac_image_ci_high) == pytest.approx((lo, hi))


def test_exact_fraction_interval_is_scipys_clopper_pearson():
    """The beta-quantile form gives scipy's exact (Clopper–Pearson) bounds, ends included."""
    for n in (1, 2, 7, 64, 500):
        for k in sorted({0, 1, n // 3, n - 1, n}):
            ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
            assert _exact_ci(k, n, 0.95) == pytest.approx((ci.low, ci.high), abs=1e-10)
