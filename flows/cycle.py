"""Cycle N+1 from cycle N: plan from the evidence, then run the Week-1 DAG on the new plan.

    previous cycle's evidence ─▶ planner (gates re-evaluated, Blocked models → alternatives,
                                 Failed actions retried once, then escalated) ─▶ week1-cycle
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from agents.planner import plan_next
from flows.week1 import DEFAULT_MISSION, week1_cycle
from tasks import evidence
from tasks.cycles import find_cycle
from tasks.mission import load_mission
from tasks.runtime.paths import reports_root


@task(name="plan-next-cycle", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def plan_from(mission_id: str, previous_cycle: str | None) -> tuple[str, dict]:
    """The next mission (written as YAML) and the plan the next cycle carries, from the previous cycle's evidence."""
    prev = find_cycle(mission_id, previous_cycle)
    with tempfile.TemporaryDirectory() as tmp:  # the mission as the previous cycle ran it (CLI overrides applied)
        as_run = load_mission(evidence.fetch_artifacts(prev.run_id, "mission/mission.yaml", Path(tmp)))
    plan = plan_next(as_run, evidence.read_run(prev.run_id))
    path = reports_root() / mission_id / "plans" / f"cycle-{plan.cycle_number}-after-{prev.cycle_id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(plan.mission.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    for change in plan.changes:
        print(f"plan: {change}")
    return str(path), {"tags": plan.cycle_tags(), "actions": plan.actions()}


@flow(name="next-cycle", log_prints=True)
def next_cycle(mission_path: str = str(DEFAULT_MISSION), previous_cycle: str | None = None, samples: int | None = None,
               allow_random_init: bool = False, fan_out: bool = False, bib_files: list[str] | None = None,
               runtime: dict | None = None):
    """Plan cycle N+1 from cycle N (default: the mission's latest finished cycle) and run it."""
    mission_id = load_mission(mission_path).id
    path, plan = plan_from(mission_id, previous_cycle)
    state = week1_cycle(mission_path=path, samples=samples, allow_random_init=allow_random_init, fan_out=fan_out,
                        bib_files=bib_files, plan=plan, runtime=runtime, return_state=True)
    return Completed(message=f"cycle {plan['tags']['fa.cycle_number']}: {state.message}", data=state.result())
