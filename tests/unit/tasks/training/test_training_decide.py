"""The per-variant decision: one pure rule, each branch."""
import math

from tasks.training.decide import ADOPT, PARTIAL, ROLLBACK, criteria, decide

GATES = dict(min_visual_share=0.10, max_accuracy_drop=0.01, alpha=0.05)


def _call(diff=0.2, p=0.001, share=0.3, acc_low=-0.005, acc_high=0.02):
    return decide(criteria(diff, p, share, acc_low, acc_high, **GATES))


def test_adopt_needs_a_significant_rise_to_the_target_and_accuracy_held():
    assert _call() == ADOPT


def test_partial_when_target_or_accuracy_is_missed():
    assert _call(share=0.05) == PARTIAL
    assert _call(acc_low=-0.03) == PARTIAL


def test_rollback_without_a_significant_rise_or_with_a_shown_accuracy_drop():
    assert _call(p=0.2) == ROLLBACK
    assert _call(diff=-0.2) == ROLLBACK
    assert _call(p=math.nan) == ROLLBACK          # nothing testable: never adopted
    assert _call(acc_low=-0.2, acc_high=-0.05) == ROLLBACK
