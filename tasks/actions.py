"""One MLflow child run per mission action, and the outcomes a stage can end with.

*Blocked* is an outcome, not a failure: the stage returns a terminal state
named Blocked (Cancelled type, so the Prefect UI never shows it as success)
carrying the reason and the mitigation, and the flow goes on with what it has.
"""
from __future__ import annotations

import errno
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect.states import Cancelled, State

from tasks import evidence
from tasks.adapters.contract import WeightsUnavailable
from tasks.evidence import BLOCKED, COMPLETED, FAILED, schema
from tasks.mission import Action, Mission
from tasks.runtime.resources import measure


@dataclass(frozen=True)
class Cycle:
    """What every stage needs to know about the cycle it belongs to."""

    mission: Mission
    mission_path: str
    cycle_id: str
    experiment_id: str
    run_id: str                 # the cycle's parent MLflow run
    report_dir: Path
    started_at: datetime
    allow_random_init: bool = False
    fan_out: bool = False       # per-model diagnostics as diagnose-model deployment runs on workers
    escalated: tuple[tuple[str, str], ...] = ()  # (action id, error): failed twice, handed to people, not run

    def to_params(self) -> dict[str, Any]:
        """JSON-able form: a deployment run on another machine gets the whole cycle as a parameter."""
        return {"mission": self.mission.model_dump(mode="json"), "mission_path": self.mission_path,
                "cycle_id": self.cycle_id, "experiment_id": self.experiment_id, "run_id": self.run_id,
                "report_dir": str(self.report_dir), "started_at": self.started_at.isoformat(),
                "allow_random_init": self.allow_random_init, "fan_out": self.fan_out,
                "escalated": [list(e) for e in self.escalated]}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Cycle:
        return cls(Mission.model_validate(params["mission"]), params["mission_path"], params["cycle_id"],
                   params["experiment_id"], params["run_id"], Path(params["report_dir"]),
                   datetime.fromisoformat(params["started_at"]), params["allow_random_init"], params.get("fan_out", False),
                   tuple(tuple(e) for e in params.get("escalated", ())))


@dataclass
class Outcome:
    key: str                    # action id, or model name for per-model work
    status: str
    run_id: str
    reason: str = ""
    mitigation: str = ""
    data: Any = None

    @property
    def ok(self) -> bool:
        return self.status == COMPLETED


def blocked(outcome: Outcome) -> State:
    """Blocked as Prefect shows it: a *Cancelled*-type state named Blocked, grey in the UI, never green like success.

    Cancelled is terminal, is not retried, and does not fail the flow: the stages read the outcome with
    ``state.result(raise_on_failure=False)`` and the flow returns its own Completed state.
    """
    return Cancelled(name=BLOCKED, message=f"{outcome.key}: {outcome.reason}", data=outcome)


def stage_label(action: Action) -> str:
    """What an action is called in the terminal and the Prefect UI: ``T1 adapters``, ``T6 alternative models``."""
    return f"{action.id} {action.stage.replace('_', ' ')}"


def action_task_name() -> str:
    """Prefect ``task_run_name`` of a stage task: the label of the action it was called with."""
    from prefect.runtime import task_run

    action = task_run.parameters.get("action")
    return stage_label(action) if isinstance(action, Action) else task_run.task_name


def open_child(cycle: Cycle, parent: str, name: str, tags: dict[str, str]) -> evidence.RunLog:
    """The child run with these identifying tags, reused if it exists (retries and re-runs write no duplicates)."""
    found = evidence.find_child(cycle.experiment_id, parent, tags)
    if found:
        return evidence.RunLog(found.run_id, found.name)
    return evidence.start_run(cycle.experiment_id, name, parent=parent, tags=tags, root=cycle.run_id)


@contextmanager
def tracked(run: evidence.RunLog):
    """Time and memory of the block logged as the run's infrastructure figures."""
    with measure() as usage:
        yield usage
    run.metrics(usage.as_metrics())


def record(run: evidence.RunLog, outcome: Outcome) -> Outcome:
    run.tags({schema.STATUS: outcome.status, schema.REASON: outcome.reason, schema.MITIGATION: outcome.mitigation}
             | (run.named(outcome.status) if outcome.status != COMPLETED else {}))
    run.finish("FAILED" if outcome.status == FAILED else "FINISHED")
    return outcome


@contextmanager
def action_run(cycle: Cycle, action: Action):
    """Open (or resume) the action's run, measure it, and leave it finished."""
    run = open_child(cycle, cycle.run_id, f"{action.id} {action.title}", {schema.KIND: "action", schema.ACTION_ID: action.id})
    run.log(params={"priority": action.priority, "owner": action.owner, "stage": action.stage,
                    "deadline_hours": action.deadline_hours, "depends_on": ",".join(action.depends_on) or "none"}
            | {schema.acceptance_key(c.metric): c.value for c in action.acceptance},
            tags={schema.TITLE: action.title, schema.PRIORITY: action.priority, schema.OWNER: action.owner})
    with tracked(run):
        yield run


def dependency_block(cycle: Cycle, action: Action, outcomes: dict[str, Outcome]) -> Outcome | None:
    """If a dependency did not complete, the action is Blocked by it (recorded, never run)."""
    unmet = [f"{d} is {outcomes[d].status}" for d in action.depends_on if d in outcomes and not outcomes[d].ok]
    if not unmet:
        return None
    with action_run(cycle, action) as run:
        outcome = Outcome(action.id, BLOCKED, run.run_id, reason="dependency not completed: " + "; ".join(unmet),
                          mitigation="resolve the blocking action; the planner re-plans it next cycle")
    return record(run, outcome)


def escalation_block(cycle: Cycle, action: Action) -> Outcome | None:
    """An action the planner escalated (failed in consecutive cycles) is not run again: Blocked, for people."""
    error = dict(cycle.escalated).get(action.id)
    if error is None:
        return None
    with action_run(cycle, action) as run:
        outcome = Outcome(action.id, BLOCKED, run.run_id, reason=f"escalated after repeated failures: {error}",
                          mitigation="the planning team decides how to proceed (see pending_actions.json)")
    return record(run, outcome)


# --------------------------------------------------------------- retry policy

class NotRetryable(Exception):
    """A cause that retrying cannot fix (bad input, missing weights)."""


def transient_only(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry I/O hiccups and out-of-memory, never a Blocked cause."""
    try:
        state.result()
    except (WeightsUnavailable, NotRetryable, ValueError, KeyError, TypeError):
        return False
    except MemoryError:
        return True
    except RuntimeError as exc:
        return "out of memory" in str(exc).lower()
    except OSError as exc:
        return exc.errno not in (errno.ENOSPC, errno.ENOENT, errno.EACCES)
    except Exception:  # noqa: BLE001 - anything else is unexpected: surface it, do not loop
        return False
    return False


def outcome_of(cycle: Cycle, action: Action, state) -> Outcome:
    """A stage task's Outcome; a task that raised after its retries is recorded as Failed on the action's run."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, Outcome):
        return result
    with action_run(cycle, action) as run:
        outcome = Outcome(action.id, FAILED, run.run_id, reason=f"{type(result).__name__}: {result}",
                          mitigation="see the flow run's logs; re-run the cycle after fixing the cause")
    record(run, outcome)
    return outcome


def run_action(cycle: Cycle, action: Action, outcomes: dict[str, Outcome], stage_task, *args) -> Outcome:
    """The action's outcome, kept in ``outcomes``: Blocked by a dependency that did not complete or by an escalation
    (never run), else ``stage_task(cycle, action, *args)``'s, a crash recorded as Failed. Every mission kind's flow."""
    outcome = dependency_block(cycle, action, outcomes) or escalation_block(cycle, action)
    if outcome is None:
        outcome = outcome_of(cycle, action, stage_task(cycle, action, *args, return_state=True))
    outcomes[action.id] = outcome
    return outcome
