from tasks.gates import GO, NEED_MORE_DATA, PIVOT, evaluate_gates
from tasks.mission import Gates

GATES = Gates(min_models_tested=3, min_models_collapsed=2, imbalance_threshold=0.8, alpha=0.05)


def test_go_when_enough_models_tested_and_collapsed():
    r = evaluate_gates({"a": True, "b": True, "c": False}, GATES)
    assert (r.decision, r.models_tested, r.models_collapsed, r.collapsed) == (GO, 3, 2, ("a", "b"))


def test_pivot_when_too_few_collapse():
    assert evaluate_gates({"a": True, "b": False, "c": False}, GATES).decision == PIVOT


def test_need_more_data_below_the_minimum_tested_even_if_all_collapse():
    r = evaluate_gates({"a": True, "b": True}, GATES)
    assert r.decision == NEED_MORE_DATA and "below the minimum" in r.rule
