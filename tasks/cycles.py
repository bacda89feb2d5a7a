"""Cycle history, read from the evidence store: what ran, when, and what it decided."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from tasks import evidence


@dataclass(frozen=True)
class CycleRecord:
    cycle_id: str
    run_id: str
    number: int
    started: datetime
    status: str                 # MLflow run status: FINISHED, RUNNING, FAILED, KILLED
    actions_total: int | None
    actions_completed: int | None
    actions_blocked: int | None
    actions_failed: int | None
    decision: str
    previous_run_id: str


def list_cycles(mission_id: str) -> list[CycleRecord]:
    """Every cycle of a mission, oldest first."""
    client = evidence.client()
    exp = client.get_experiment_by_name(mission_id)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`fa.kind` = 'cycle'", max_results=10_000,
                              order_by=["attributes.start_time ASC"])
    out = []
    for r in runs:
        tags, m = r.data.tags, r.data.metrics
        count = lambda key: int(m[key]) if key in m else None  # noqa: E731
        out.append(CycleRecord(
            tags.get("fa.cycle_id", r.info.run_id), r.info.run_id, int(tags.get("fa.cycle_number", 1)),
            datetime.fromtimestamp(r.info.start_time / 1000, tz=timezone.utc), r.info.status,
            count("actions_total"), count("actions_completed"), count("actions_blocked"), count("actions_failed"),
            tags.get("fa.decision", "—"), tags.get("fa.previous_cycle_run", "")))
    return out


def find_cycle(mission_id: str, cycle_id: str | None = None) -> CycleRecord:
    """The named cycle, or the latest finished one."""
    cycles = list_cycles(mission_id)
    if cycle_id:
        match = [c for c in cycles if c.cycle_id == cycle_id or c.run_id == cycle_id]
        if not match:
            raise LookupError(f"no cycle {cycle_id!r} in mission {mission_id!r}: `fusionaudit cycle list` shows the cycles")
        return match[0]
    finished = [c for c in cycles if c.status == "FINISHED"]
    if not finished:
        raise LookupError(f"mission {mission_id!r} has no finished cycle to plan from: run `fusionaudit cycle run` first")
    return finished[-1]
