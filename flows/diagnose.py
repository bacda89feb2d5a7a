"""One model's diagnostics as a flow of its own: the ``diagnose-model`` deployment, and its dispatch.

The Week-1 cycle runs it as a subflow, or — fanned out — as deployment runs
that land on different workers (one per GPU machine). The flow writes its
results to the evidence store and returns the model's MLflow run id, so the
cycle reads the same numbers whichever machine computed them.
"""
from __future__ import annotations

import os
import time

from prefect import flow, get_run_logger

from tasks import evidence, progress
from tasks.actions import COMPLETED, Cycle, NotRetryable
from tasks.evidence import schema
from tasks.mission import ModelEntry
from tasks.stages.diagnostics import diagnose_and_log, model_failed

DIAGNOSE_DEPLOYMENT = "diagnose-model/diagnose-model"


@flow(name="diagnose-model", flow_run_name="diagnose/{model}", log_prints=True)
def diagnose_model_flow(cycle: dict, model: str, parent_run_id: str) -> str:
    """Diagnose ``model`` of the cycle (``Cycle.to_params()``) under the diagnostics run ``parent_run_id``."""
    c = Cycle.from_params(cycle)
    return diagnose_and_log(c, parent_run_id, c.mission.model(model))


def dispatch(cycle: Cycle, parent: str, entries: tuple[ModelEntry, ...]) -> dict[str, str]:
    """Every model's diagnose-model run, in process or fanned out (``cycle.fan_out``): {model: model run id}."""
    return fan_out(cycle, parent, entries) if cycle.fan_out else in_process(cycle, parent, entries)


def in_process(cycle: Cycle, parent: str, entries: tuple[ModelEntry, ...]) -> dict[str, str]:
    """Each model as a subflow in this process, one after the other."""
    finished = {}
    for i, entry in enumerate(entries):
        progress.report("model", f"diagnose {entry.name}", i, len(entries))
        state = diagnose_model_flow(cycle.to_params(), entry.name, parent, return_state=True)
        if state.is_completed():
            finished[entry.name] = state.result()
        else:
            model_failed(cycle, parent, entry, state.result(raise_on_failure=False))
    return finished


class FanOutStalled(NotRetryable):
    """The fanned-out diagnostics cannot start (the cycle holds the pool's only slot) or did not end in time."""


FAN_OUT_STALL_S = 30.0      # no model run started for this long while the cycle holds a slot of their pool: a deadlock


def fan_out_timeout_s() -> float:
    """How long the cycle waits for its per-model runs at most (``FUSIONAUDIT_FAN_OUT_TIMEOUT_S``, default 6 h)."""
    return float(os.environ.get("FUSIONAUDIT_FAN_OUT_TIMEOUT_S", 6 * 3600))


def fan_out(cycle: Cycle, parent: str, entries: tuple[ModelEntry, ...], poll_s: float = 2.0) -> dict[str, str]:
    """Submit every model as a deployment run at once, then wait: workers run them in parallel.

    The runs' results come back through the evidence store (the model's child
    run under ``parent``), not through Prefect result storage, which a worker
    on another machine does not share. While waiting, the runs still pending
    are logged; if none has started after ``FAN_OUT_STALL_S`` while this cycle
    runs on a worker of the same pool (with ``--limit 1`` it holds the only
    slot they could use), or the wait passes ``fan_out_timeout_s()``, the
    pending runs are cancelled and the stage fails with the fix in its message.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    pending = {e.name: run_deployment(DIAGNOSE_DEPLOYMENT, parameters={"cycle": cycle.to_params(), "model": e.name,
                                                                        "parent_run_id": parent},
                                      timeout=0, flow_run_name=f"diagnose/{e.name}").id
               for e in entries}
    ended = {}
    started_at, last_note, timeout = time.monotonic(), 0.0, fan_out_timeout_s()
    with get_client(sync_client=True) as client:
        pool = _shared_pool(client)
        while pending:
            runs = {name: client.read_flow_run(run_id) for name, run_id in pending.items()}
            for name, flow_run in runs.items():
                if flow_run.state and flow_run.state.is_final():
                    ended[name] = flow_run
                    del pending[name]
                    progress.report("model", f"diagnosed {name}", len(ended), len(entries))
            if not pending:
                break
            waited = time.monotonic() - started_at
            waiting = [n for n in pending if runs[n].state and runs[n].state.type.value in ("SCHEDULED", "PENDING")]
            if time.monotonic() - last_note > 15:
                logger.info("waiting %.0f s for %d diagnose-model run(s): %s", waited, len(pending),
                            ", ".join(f"{n} ({runs[n].state.name if runs[n].state else '?'})" for n in pending))
                last_note = time.monotonic()
            stalled = bool(pool) and not ended and len(waiting) == len(pending) and waited > FAN_OUT_STALL_S
            if stalled or waited > timeout:
                for run_id in pending.values():
                    _cancel(client, run_id)
                raise FanOutStalled(_stall_message(pool, pending) if stalled else
                                    f"fan-out timeout: diagnose-model run(s) {', '.join(pending)} still pending after "
                                    f"{timeout:.0f} s; start workers for their pool or raise FUSIONAUDIT_FAN_OUT_TIMEOUT_S")
            time.sleep(poll_s)
    finished = {}
    for entry in entries:
        flow_run = ended[entry.name]
        model_run = evidence.find_child(cycle.experiment_id, parent, {schema.KIND: "model", schema.MODEL: entry.name})
        if flow_run.state.is_completed() and model_run and model_run.tags.get(schema.STATUS) == COMPLETED:
            finished[entry.name] = model_run.run_id
        else:
            model_failed(cycle, parent, entry, RuntimeError(
                f"diagnose-model run {flow_run.name!r} ended {flow_run.state.name}: {flow_run.state.message or 'no message'}"))
    return finished


def _stall_message(pool: str, pending: dict) -> str:
    return (f"fan-out deadlock: this cycle runs on a worker of pool {pool!r} and none of its diagnose-model runs "
            f"({', '.join(pending)}) started within {FAN_OUT_STALL_S:.0f} s: with one worker at --limit 1 the cycle holds "
            f"the only slot. Fix: start a second worker (`prefect worker start --pool {pool} --limit 1`), run the cycle "
            "from the CLI (`fusionaudit cycle run --fan-out`), or trigger it without fan_out")


def _shared_pool(client) -> str | None:
    """The work pool this cycle runs on, if the diagnose-model deployment uses it too (else None)."""
    from prefect.runtime import flow_run

    try:
        mine = client.read_flow_run(flow_run.id).work_pool_name if flow_run.id else None
        theirs = client.read_deployment_by_name(DIAGNOSE_DEPLOYMENT).work_pool_name
    except Exception:  # noqa: BLE001 - no answer means no shared slot to worry about
        return None
    return mine if mine and mine == theirs else None


def _cancel(client, run_id) -> None:
    from prefect.states import Cancelled

    try:
        client.set_flow_run_state(run_id, Cancelled(message="the cycle that submitted it gave up waiting"), force=True)
    except Exception:  # noqa: BLE001 - best effort: the run is cancelled in the UI otherwise
        pass
