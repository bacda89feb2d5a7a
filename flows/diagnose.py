"""One model's diagnostics as a flow of its own: the ``diagnose-model`` deployment.

The Week-1 cycle runs it as a subflow, or — fanned out — as deployment runs
that land on different workers (one per GPU machine). The flow writes its
results to the evidence store and returns the model's MLflow run id, so the
cycle reads the same numbers whichever machine computed them.
"""
from __future__ import annotations

from prefect import flow

from tasks.actions import Cycle
from tasks.stages import diagnose_and_log


@flow(name="diagnose-model", flow_run_name="diagnose/{model}", log_prints=True)
def diagnose_model_flow(cycle: dict, model: str, parent_run_id: str) -> str:
    """Diagnose ``model`` of the cycle (``Cycle.to_params()``) under the diagnostics run ``parent_run_id``."""
    c = Cycle.from_params(cycle)
    return diagnose_and_log(c, parent_run_id, c.mission.model(model))
