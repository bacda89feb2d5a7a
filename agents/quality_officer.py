"""Quality & Safety Officer: acceptance criteria checked against evidence, citations re-read from MLflow."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks import evidence
from tasks.actions import BLOCKED, COMPLETED, FAILED
from tasks.mission import Mission


@dataclass(frozen=True)
class CriterionCheck:
    action_id: str
    description: str
    metric: str
    op: str
    observed: float | None
    passed: bool


def check_criteria(mission: Mission, cycle: evidence.RunEvidence) -> list[CriterionCheck]:
    """Each criterion of each action that ran, evaluated on that action's logged metrics."""
    checks = []
    for action in mission.actions:
        run = cycle.child("fa.action_id", action.id)
        if run is None or run.tags.get("fa.status") == BLOCKED:
            continue
        for c in action.acceptance:
            observed = run.m(c.metric)
            value = None if observed is None else float(observed.value)
            checks.append(CriterionCheck(action.id, c.description, c.metric, c.op, value, c.holds(value)))
    return checks


def final_status(stage_status: str, checks: list[CriterionCheck]) -> str:
    """A stage that ran but missed a criterion is Failed; Blocked stays Blocked."""
    if stage_status != COMPLETED:
        return stage_status
    return COMPLETED if all(c.passed for c in checks) else FAILED


def verify_files(paths: list[Path]) -> tuple[list[str], int]:
    """Findings (file: line: problem) over every Markdown report, and the number of citations checked."""
    findings: list[str] = []
    checked = 0
    for path in paths:
        found, n = evidence.verify_markdown(path.read_text(encoding="utf-8"))
        checked += n
        findings += [f"{path.name}: {f}" for f in found]
    return findings, checked
