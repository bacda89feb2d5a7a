"""What the stages share: retries, the project root, a model's spec, a model's run, closing an action, a cycle's start."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import yaml
from prefect.tasks import exponential_backoff

from tasks import evidence
from tasks.actions import BLOCKED, Cycle, Outcome, blocked, open_child, record, transient_only
from tasks.adapters.contract import ModelSpec
from tasks.evidence import schema
from tasks.evidence.recovery import close_killed_cycles, owner_tags
from tasks.mission import ModelEntry
from tasks.runtime.paths import reports_root

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RETRY = dict(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_condition_fn=transient_only)


def model_spec(cycle: Cycle, entry: ModelEntry) -> ModelSpec:
    return ModelSpec(name=entry.name, adapter=entry.adapter, source=entry.source, arch=entry.arch,
                     allow_random_init=cycle.allow_random_init and not entry.calibration,
                     random_init_config=tuple(sorted(entry.random_init_config.items())),
                     trust_remote_code=entry.trust_remote_code,
                     device=cycle.mission.runtime.device, dtype=cycle.mission.runtime.dtype)


def open_model_run(cycle: Cycle, parent: str, name: str) -> evidence.RunLog:
    """A model's child run under an action: every stage that works per model logs there."""
    return open_child(cycle, parent, name, {schema.KIND: "model", schema.MODEL: name})


def finish(run: evidence.RunLog, outcome: Outcome):
    """Record the action's outcome; a Blocked one becomes a Prefect state the flow reads as Blocked."""
    record(run, outcome)
    return blocked(outcome) if outcome.status == BLOCKED else outcome


class CycleStart(NamedTuple):
    started: datetime
    cycle_id: str
    experiment: str
    run: evidence.RunLog
    report_dir: Path


def open_cycle(mission_id: str, kind: str | None = None, tags: dict | None = None) -> CycleStart:
    """A new cycle of any mission kind: its id from its start time, the mission's experiment (a killed cycle's runs
    closed first) and its parent run, tagged with the owner; ``kind`` is tagged as the mission kind where given
    (Week-1 cycles carry none), ``tags`` last (a plan's chain to the previous cycle)."""
    started = datetime.now(timezone.utc)
    cycle_id = started.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    experiment = evidence.ensure_experiment(mission_id)
    close_killed_cycles(experiment)
    kind_tag = {schema.MISSION_KIND: kind} if kind else {}
    run = evidence.start_run(experiment, f"cycle {cycle_id}", tags={schema.KIND: "cycle", schema.CYCLE_ID: cycle_id,
                                                                    schema.MISSION: mission_id, **kind_tag,
                                                                    schema.CYCLE_NUMBER: "1", **owner_tags(), **(tags or {})})
    return CycleStart(started, cycle_id, experiment, run, reports_root() / mission_id / cycle_id)


def keep_mission_as_run(run: evidence.RunLog, mission, report_dir: Path) -> None:
    """The mission with CLI overrides applied, in the report folder and as the cycle's artifact: what the next cycle plans from."""
    report_dir.mkdir(parents=True, exist_ok=True)
    as_run = report_dir / "mission.yaml"
    as_run.write_text(yaml.safe_dump(mission.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    run.artifact(as_run, "mission")
