"""Cycle history, read from the evidence store: what ran, when, and what it decided."""
from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tasks.evidence import schema
from tasks.runtime.paths import tracking_uri


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
    """Every cycle of a mission, oldest first.

    On the default SQLite store the runs are read with a read-only SQL query (no MLflow import: `cycle list` answers
    in a second); any other store goes through MLflow's client.
    """
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return _from_sqlite(Path(uri.removeprefix("sqlite:///")), mission_id)
    return _from_client(mission_id)


_TAGS = (schema.CYCLE_ID, schema.CYCLE_NUMBER, schema.DECISION, schema.PREVIOUS_CYCLE_RUN)
_COUNTS = ("actions_total", "actions_completed", "actions_blocked", "actions_failed")


def _record(run_id: str, start_ms: int, status: str, tags: dict[str, str], metrics: dict[str, float]) -> CycleRecord:
    count = lambda key: int(metrics[key]) if key in metrics else None  # noqa: E731
    return CycleRecord(tags.get(schema.CYCLE_ID, run_id), run_id, int(tags.get(schema.CYCLE_NUMBER, 1)),
                       datetime.fromtimestamp(start_ms / 1000, tz=timezone.utc), status,
                       *(count(k) for k in _COUNTS), tags.get(schema.DECISION, "—"), tags.get(schema.PREVIOUS_CYCLE_RUN, ""))


def _from_sqlite(db: Path, mission_id: str) -> list[CycleRecord]:
    """The same records as ``_from_client``, read from MLflow's SQLite schema (runs, tags, latest_metrics)."""
    if not db.exists():
        return []
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        try:
            runs = con.execute(
                "SELECT r.run_uuid, r.start_time, r.status FROM runs r "
                "JOIN experiments e ON e.experiment_id = r.experiment_id "
                "JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = ? AND k.value = 'cycle' "
                "WHERE e.name = ? AND e.lifecycle_stage = 'active' AND r.lifecycle_stage = 'active' "
                "ORDER BY r.start_time ASC", (schema.KIND, mission_id)).fetchall()
        except sqlite3.OperationalError:  # not (yet) an MLflow database
            return []
        ids = [r[0] for r in runs]
        marks = ",".join("?" * len(ids))
        tags, metrics = {i: {} for i in ids}, {i: {} for i in ids}
        if ids:
            for run_id, key, value in con.execute(
                    f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks}) AND key IN "
                    f"({','.join('?' * len(_TAGS))})", (*ids, *_TAGS)):
                tags[run_id][key] = value
            for run_id, key, value in con.execute(
                    f"SELECT run_uuid, key, value FROM latest_metrics WHERE run_uuid IN ({marks}) AND key IN "
                    f"({','.join('?' * len(_COUNTS))})", (*ids, *_COUNTS)):
                metrics[run_id][key] = value
    return [_record(run_id, start, status, tags[run_id], metrics[run_id]) for run_id, start, status in runs]


def _from_client(mission_id: str) -> list[CycleRecord]:
    from tasks import evidence

    client = evidence.client()
    exp = client.get_experiment_by_name(mission_id)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{schema.KIND}` = 'cycle'", max_results=10_000,
                              order_by=["attributes.start_time ASC"])
    return [_record(r.info.run_id, r.info.start_time, r.info.status, r.data.tags, r.data.metrics) for r in runs]


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
