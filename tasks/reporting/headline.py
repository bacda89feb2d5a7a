"""The handoff's first screen: how strong the answer is, what keeps it from being stronger, and the one action
that would make it stronger. Pure: it reads facts the evidence already holds; the reports stage logs the result
(metrics ``headline/*`` and tags ``EVIDENCE_STRENGTH``, ``BLOCKER``, ``NEXT_ACTION`` of ``tasks.evidence.schema`` on
the cycle run) so the handoff cites it like any other number.

Controls (calibration-zoo and RANDOM-INIT models) show that the method works; they are never evidence about the
world, so the strength counts external models only. The texts carry no bare numbers (the counts are logged as
metrics and cited where shown); names sit in code spans.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from tasks.evidence import schema


class ModelFacts(Protocol):
    name: str
    calibration: bool
    random_init: bool
    status: str             # Completed / Blocked / Failed / Not run (the model's adapter run)
    stats: dict             # non-empty when the statistics analysed the model


@dataclass(frozen=True)
class Headline:
    external_tested: int
    external_blocked: int
    controls: int
    strength: str           # none / weak / moderate / strong
    strength_reason: str
    blocker: str            # what keeps the answer from being stronger ("nothing" when nothing does)
    next_action: str        # the one action that unblocks it

    def metrics(self) -> dict[str, int]:
        return {"headline/external_tested": self.external_tested, "headline/external_blocked": self.external_blocked,
                "headline/controls": self.controls}

    def tags(self) -> dict[str, str]:
        return {schema.EVIDENCE_STRENGTH: self.strength, schema.STRENGTH_REASON: self.strength_reason,
                schema.BLOCKER: self.blocker, schema.NEXT_ACTION: self.next_action}


def is_control(model: ModelFacts) -> bool:
    return bool(model.calibration or model.random_init)


def headline(models: Sequence[ModelFacts], min_tested: int, calibrated: bool | None, failed_actions: Sequence[str] = (),
             stats_ran: bool = True) -> Headline:
    """``calibrated``: whether the latest calibration showed the verdict metric separates the zoo (None: never run)."""
    external = [m for m in models if not is_control(m)]
    tested = [m for m in external if m.stats]
    blocked = [m for m in external if m.status == "Blocked"]
    controls = sum(1 for m in models if is_control(m) and m.stats)
    n = len(tested)
    if not stats_ran:
        strength, why = "none", "the statistics did not run"
    elif n == 0:
        strength, why = "none", "no external model was tested; controls only show that the method works"
    elif n < min_tested:
        strength, why = "weak", "fewer external models were tested than the gates need"
    elif not calibrated:
        strength, why = "moderate", "enough external models, but the verdict metric's calibration is not shown"
    else:
        strength, why = "strong", "enough external models, and the verdict metric separates the calibration zoo"

    if blocked and n < min_tested:
        names = ", ".join(f"`{m.name}`" for m in blocked)
        blocker = f"external models Blocked, their weights are not on this machine: {names}"
        action = "provide their weights (see 'How to provide weights'), then run `fusionaudit cycle run --next`"
    elif n < min_tested:
        blocker = "the mission names fewer external models than the gates need"
        action = "add external models under `models:` of the mission, then run `fusionaudit cycle run`"
    elif failed_actions:
        blocker = "action(s) not completed: " + ", ".join(f"`{a}`" for a in failed_actions)
        action = "fix the cause named under 'Blockers and issues', then run `fusionaudit cycle run --next`"
    elif not calibrated:
        blocker = "the verdict metric's calibration is not shown in this evidence store"
        action = "run `fusionaudit calibrate`, then `fusionaudit cycle run --next`"
    else:
        blocker, action = "nothing", "none: the answer stands on this cycle's evidence"
    return Headline(n, len(blocked), controls, strength, why, blocker, action)
