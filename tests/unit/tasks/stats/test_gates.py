from tasks.mission import Gates
from tasks.stats.gates import CALIBRATION, GO, NEED_MORE_DATA, PIVOT, RANDOM_INIT, ModelVerdict, decide

GATES = Gates(min_models_tested=3, min_models_collapsed=2, imbalance_threshold=0.8, alpha=0.05)


def subjects(**collapsed: bool) -> list[ModelVerdict]:
    return [ModelVerdict(name, collapsed=c, architecture=name) for name, c in collapsed.items()]


def test_go_when_enough_models_tested_and_collapsed():
    r = decide(subjects(a=True, b=True, c=False), GATES)
    assert (r.decision, r.models_tested, r.models_collapsed, r.collapsed) == (GO, 3, 2, ("a", "b"))
    assert r.architectures_counted == 3 and r.trustworthy


def test_pivot_when_too_few_collapse():
    assert decide(subjects(a=True, b=False, c=False), GATES).decision == PIVOT


def test_need_more_data_below_the_minimum_tested_even_if_all_collapse():
    r = decide(subjects(a=True, b=True), GATES, blocked=["x"])
    assert r.decision == NEED_MORE_DATA and "below the minimum" in r.rule
    assert r.blocked == ("x",) and "2 external model(s) tested, 1 Blocked" in r.headline


def test_controls_are_never_counted():
    """Three collapsed calibration models and a collapsed RANDOM-INIT model decide nothing."""
    controls = [ModelVerdict(f"zoo-{i}", CALIBRATION, collapsed=True, control_passed=True) for i in range(3)]
    r = decide(controls + [ModelVerdict("clip", RANDOM_INIT, collapsed=True)], GATES)
    assert r.decision == NEED_MORE_DATA and r.models_tested == 0 and r.tested == ()
    assert r.controls == ("clip", "zoo-0", "zoo-1", "zoo-2") and r.trustworthy


def test_a_failed_control_makes_the_decision_not_trustworthy():
    r = decide(subjects(a=True, b=True, c=True) + [ModelVerdict("zoo-balanced", CALIBRATION, True, control_passed=False)],
               GATES)
    assert r.decision == GO and not r.trustworthy and r.controls_failed == ("zoo-balanced",)
    assert "not trustworthy" in r.headline


def test_architectures_are_counted_once():
    models = [ModelVerdict("clip-a", collapsed=True, architecture="clip"),
              ModelVerdict("clip-b", collapsed=True, architecture="clip"), ModelVerdict("vilt", architecture="vilt")]
    assert decide(models, GATES).architectures == ("clip", "vilt")
