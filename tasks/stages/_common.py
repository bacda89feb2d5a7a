"""What the Week-1 stages share: retries, the project root, a model's spec, a model's run, closing an action."""
from __future__ import annotations

from pathlib import Path

from prefect.tasks import exponential_backoff

from tasks import evidence
from tasks.actions import BLOCKED, Cycle, Outcome, blocked, open_child, record, transient_only
from tasks.adapters.contract import ModelSpec
from tasks.evidence import schema
from tasks.mission import ModelEntry

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
