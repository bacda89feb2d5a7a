"""Acceptance criteria of the mission's actions, evaluated on the metrics each action logged.

The quality officer applies them (``agents.quality_officer`` re-exports these);
the reports show them; both read the same evidence, so they live below both.
"""
from __future__ import annotations

from dataclasses import dataclass

from tasks import evidence
from tasks.evidence import BLOCKED, COMPLETED, FAILED, schema
from tasks.evidence.cited import Cited, format_number
from tasks.mission import Mission


@dataclass(frozen=True)
class CriterionCheck:
    action_id: str
    description: str
    metric: str
    op: str
    observed: float | None
    passed: bool
    required: float | None = None          # the mission's threshold
    evidence: Cited | None = None          # the observed metric as logged: value + [run_id:key]
    required_evidence: Cited | None = None  # the threshold as logged on the action run (params/acceptance/<metric>)

    def markdown(self) -> str:
        """``PASS: `description`: `metric` = 3 [run:metric], required >= 1 [run:params/acceptance/metric]`` (verifiable)."""
        observed = f"{self.evidence.formatted()} {self.evidence.citation}" if self.evidence else "not logged"
        if self.required_evidence is not None and not isinstance(self.required_evidence.value, str):
            required = f"{self.required_evidence.formatted()} {self.required_evidence.citation}"
        else:  # a threshold that is not evidence is shown as mission text, not as a measured number
            required = f"`{format_number(self.required)} (mission)`" if self.required is not None else "n/a"
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict}: `{self.description}`: `{self.metric}` = {observed}, required {self.op} {required}"


def check_criteria(mission: Mission, cycle: evidence.RunEvidence) -> list[CriterionCheck]:
    """Each criterion of each action that ran, evaluated on that action's logged metrics, with its evidence."""
    checks = []
    for action in mission.actions:
        run = cycle.child(schema.ACTION_ID, action.id)
        if run is None or run.tags.get(schema.STATUS) == BLOCKED:
            continue
        for c in action.acceptance:
            observed = run.m(c.metric)
            value = None if observed is None else float(observed.value)
            checks.append(CriterionCheck(action.id, c.description, c.metric, c.op, value, c.holds(value),
                                         required=c.value, evidence=observed,
                                         required_evidence=run.p(schema.acceptance_key(c.metric))))
    return checks


def final_status(stage_status: str, checks: list[CriterionCheck]) -> str:
    """A stage that ran but missed a criterion is Failed; Blocked stays Blocked."""
    if stage_status != COMPLETED:
        return stage_status
    return COMPLETED if all(c.passed for c in checks) else FAILED
