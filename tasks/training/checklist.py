"""The mission's checklist, evaluated on logged evidence: each item a predicate over runs, with its worst case."""
from __future__ import annotations

from dataclasses import dataclass, field

from tasks.evidence import RunEvidence, schema
from tasks.evidence.cited import Cited
from tasks.mission import Criterion
from tasks.training.mission import ChecklistItem


@dataclass(frozen=True)
class ItemResult:
    item: ChecklistItem
    checked: int                      # runs (or variants) the predicate was evaluated on
    passed_count: int
    worst: Cited | None               # the value closest to failing (the failing one if any), as logged
    failing: list[str] = field(default_factory=list)  # which runs / variants failed

    @property
    def passed(self) -> bool:
        return self.checked > 0 and self.passed_count == self.checked


def evaluate(items: tuple[ChecklistItem, ...], training_runs: dict[str, RunEvidence], compare_run: RunEvidence | None,
             variants: list[str]) -> list[ItemResult]:
    """``training_runs``: label → run; a metric that is not logged counts as failing (no evidence, no pass)."""
    results = []
    for item in items:
        rule = Criterion(description=item.description, metric=item.metric, op=item.op, value=item.value)
        if item.scope == "training_runs":
            observed = {label: run.m(item.metric) for label, run in training_runs.items()}
        else:
            observed = {v: compare_run.m(schema.variant_key(v, item.metric)) if compare_run else None for v in variants}
        failing = [label for label, c in observed.items() if not rule.holds(None if c is None else float(c.value))]
        present = [c for c in observed.values() if c is not None]
        results.append(ItemResult(item, len(observed), len(observed) - len(failing), _worst(item, observed, failing, present),
                                  failing))
    return results


def _worst(item: ChecklistItem, observed: dict, failing: list[str], present: list[Cited]) -> Cited | None:
    shown = [observed[f] for f in failing if observed[f] is not None]
    if shown:
        return shown[0]
    if not present:
        return None
    if item.op in (">=", ">"):
        return min(present, key=lambda c: float(c.value))
    if item.op in ("<=", "<"):
        return max(present, key=lambda c: float(c.value))
    return present[0]
