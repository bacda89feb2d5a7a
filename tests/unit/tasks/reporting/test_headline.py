"""The first screen's strength, blocker and action: controls never count as evidence about the world."""
from dataclasses import dataclass, field

from agents.quality_officer import check_text
from tasks.reporting.headline import headline


@dataclass
class M:
    name: str
    calibration: bool = False
    random_init: bool = False
    status: str = "Completed"
    stats: dict = field(default_factory=dict)


TESTED = {"mean": 0.5}


def test_controls_only_is_no_evidence_and_blocked_weights_are_the_blocker():
    models = [M("clip-vit-b-32", status="Blocked"), M("zoo-a", calibration=True, stats=TESTED),
              M("rand", random_init=True, stats=TESTED)]
    h = headline(models, min_tested=3, calibrated=True)
    assert (h.external_tested, h.external_blocked, h.controls) == (0, 1, 2)
    assert h.strength == "none"
    assert "`clip-vit-b-32`" in h.blocker and "How to provide weights" in h.next_action


def test_strength_grows_with_external_models_and_calibration():
    ext = [M(f"m{i}", stats=TESTED) for i in range(3)]
    assert headline(ext[:1], 3, True).strength == "weak"
    assert headline(ext, 3, None).strength == "moderate"
    assert "fusionaudit calibrate" in headline(ext, 3, None).next_action
    strong = headline(ext, 3, True)
    assert strong.strength == "strong" and strong.blocker == "nothing"
    assert headline(ext, 3, True, failed_actions=["T4"]).blocker == "action(s) not completed: `T4`"


def test_texts_pass_the_evidence_check_without_citations():
    h = headline([M("llava-1.5-7b", status="Blocked"), M("a", stats=TESTED)], 3, False)
    for text in h.tags().values():
        assert check_text(text)[0] == [], text
