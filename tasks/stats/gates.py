"""The one GO / PIVOT / NEED_MORE_DATA decision, with its arithmetic visible.

``decide`` is the only place the decision is made: the statistics stage calls
it on the verdicts it computed, the planner and every report call it on the
verdicts the stage logged (``tasks.logged_decision``), so they
cannot disagree. Only external subjects count: calibration-zoo models and
RANDOM-INIT models are controls (DESIGN.md, "Verdicts"); they show that the
method works and are never evidence about the world. A calibration model
that does not behave as planted makes the decision not trustworthy.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tasks.mission import Gates

GO, PIVOT, NEED_MORE_DATA = "GO", "PIVOT", "NEED_MORE_DATA"
SUBJECT, CALIBRATION, RANDOM_INIT = "subject", "calibration", "random-init"


@dataclass(frozen=True)
class ModelVerdict:
    """One tested model as the gates see it.

    ``collapsed`` is the collapse verdict with the Holm-corrected p (subjects)
    or the model's own p (controls). ``control_passed``: for a calibration
    model, whether the measured direction matches the planted one.
    """

    name: str
    role: str = SUBJECT             # subject | calibration | random-init
    collapsed: bool = False
    architecture: str = ""          # the adapter family, to count distinct architectures
    control_passed: bool | None = None


@dataclass(frozen=True)
class GateResult:
    decision: str
    models_tested: int              # external subjects tested (the only models counted)
    models_collapsed: int
    tested: tuple[str, ...]
    collapsed: tuple[str, ...]
    rule: str                       # which rule fired, in words
    blocked: tuple[str, ...] = ()   # external models that could not be tested
    controls: tuple[str, ...] = ()  # calibration and RANDOM-INIT models: never counted
    controls_failed: tuple[str, ...] = ()
    architectures: tuple[str, ...] = ()  # distinct architectures among the tested subjects

    @property
    def trustworthy(self) -> bool:
        """False when a calibration model did not behave as planted: the verdict metric failed its controls."""
        return not self.controls_failed

    @property
    def architectures_counted(self) -> int:
        return len(self.architectures)

    @property
    def headline(self) -> str:
        """One sentence with the decision and what it rests on (names only; the numbers are cited by the reports)."""
        trust = "" if self.trustworthy else " (not trustworthy: the verdict metric failed its controls)"
        return (f"{self.decision}{trust}: {self.models_tested} external model(s) tested, {len(self.blocked)} Blocked, "
                f"{self.models_collapsed} collapsed; {len(self.controls)} control(s) not counted")


def decide(models: Iterable[ModelVerdict], gates: Gates, blocked: Iterable[str] = ()) -> GateResult:
    """Per-model verdicts → GO / PIVOT / NEED_MORE_DATA under the mission's gates.

    NEED_MORE_DATA when fewer external subjects than ``min_models_tested`` were
    tested (whatever the controls show); otherwise GO when at least
    ``min_models_collapsed`` of them collapsed, else PIVOT (collapse not shown
    to be field-wide).
    """
    models = sorted(models, key=lambda m: m.name)
    subjects = [m for m in models if m.role == SUBJECT]
    controls = tuple(m.name for m in models if m.role != SUBJECT)
    failed = tuple(m.name for m in models if m.role == CALIBRATION and m.control_passed is False)
    tested = tuple(m.name for m in subjects)
    collapsed = tuple(m.name for m in subjects if m.collapsed)
    if len(tested) < gates.min_models_tested:
        decision, rule = NEED_MORE_DATA, "external models tested below the minimum (controls are never counted)"
    elif len(collapsed) >= gates.min_models_collapsed:
        decision, rule = GO, "enough external models tested and enough of them collapsed"
    else:
        decision, rule = PIVOT, "enough external models tested but too few collapsed"
    architectures = tuple(sorted({m.architecture or m.name for m in subjects}))
    return GateResult(decision, len(tested), len(collapsed), tested, collapsed, rule, tuple(sorted(set(blocked))),
                      controls, failed, architectures)
