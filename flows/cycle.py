"""Cycle N+1 from cycle N: plan from the evidence, then run the Week-1 DAG on the new plan.

    previous cycle's evidence ─▶ planner (gates re-evaluated, Blocked models → alternatives,
                                 Failed actions retried once, then escalated) ─▶ week1-cycle
"""
from __future__ import annotations

from prefect import flow
from prefect.states import Completed

from flows.week1 import DEFAULT_MISSION, week1_cycle
from tasks.evidence import schema
from tasks.mission import load_mission
from tasks.stages.cycle import plan_from


@flow(name="next-cycle", log_prints=True)
def next_cycle(mission_path: str = str(DEFAULT_MISSION), previous_cycle: str | None = None, samples: int | None = None,
               allow_random_init: bool = False, fan_out: bool = False, bib_files: list[str] | None = None,
               runtime: dict | None = None):
    """Plan cycle N+1 from cycle N (default: the mission's latest finished cycle) and run it."""
    mission_id = load_mission(mission_path).id
    path, plan = plan_from(mission_id, previous_cycle)
    state = week1_cycle(mission_path=path, samples=samples, allow_random_init=allow_random_init, fan_out=fan_out,
                        bib_files=bib_files, plan=plan, runtime=runtime, return_state=True)
    return Completed(message=f"cycle {plan['tags'][schema.CYCLE_NUMBER]}: {state.message}", data=state.result())
