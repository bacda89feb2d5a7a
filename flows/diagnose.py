"""One model's diagnostics as a flow of its own: the ``diagnose-model`` deployment, and its dispatch.

The Week-1 cycle runs it as a subflow, or — fanned out — as deployment runs
that land on different workers (one per GPU machine). The flow writes its
results to the evidence store and returns the model's MLflow run id, so the
cycle reads the same numbers whichever machine computed them.
"""
from __future__ import annotations

import time

from prefect import flow

from tasks import evidence
from tasks.actions import COMPLETED, Cycle
from tasks.mission import ModelEntry
from tasks.stages import diagnose_and_log, model_failed

DIAGNOSE_DEPLOYMENT = "diagnose-model/diagnose-model"


@flow(name="diagnose-model", log_prints=True)
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
    for entry in entries:
        state = diagnose_model_flow(cycle.to_params(), entry.name, parent, return_state=True)
        if state.is_completed():
            finished[entry.name] = state.result()
        else:
            model_failed(cycle, parent, entry, state.result(raise_on_failure=False))
    return finished


def fan_out(cycle: Cycle, parent: str, entries: tuple[ModelEntry, ...], poll_s: float = 2.0) -> dict[str, str]:
    """Submit every model as a deployment run at once, then wait: workers run them in parallel.

    The runs' results come back through the evidence store (the model's child
    run under ``parent``), not through Prefect result storage, which a worker
    on another machine does not share.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    pending = {e.name: run_deployment(DIAGNOSE_DEPLOYMENT, parameters={"cycle": cycle.to_params(), "model": e.name,
                                                                        "parent_run_id": parent},
                                      timeout=0, flow_run_name=f"diagnose {e.name} ({cycle.cycle_id})").id
               for e in entries}
    ended = {}
    with get_client(sync_client=True) as client:
        while pending:
            for name, run_id in list(pending.items()):
                flow_run = client.read_flow_run(run_id)
                if flow_run.state and flow_run.state.is_final():
                    ended[name] = flow_run
                    del pending[name]
            if pending:
                time.sleep(poll_s)
    finished = {}
    for entry in entries:
        flow_run = ended[entry.name]
        model_run = evidence.find_child(cycle.experiment_id, parent, {"fa.kind": "model", "fa.model": entry.name})
        if flow_run.state.is_completed() and model_run and model_run.tags.get("fa.status") == COMPLETED:
            finished[entry.name] = model_run.run_id
        else:
            model_failed(cycle, parent, entry, RuntimeError(
                f"diagnose-model run {flow_run.name!r} ended {flow_run.state.name}: {flow_run.state.message or 'no message'}"))
    return finished
