"""The cycle's parent run: opened from the mission (or the planner's plan), and cycle N+1 planned from cycle N."""
from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE

from agents.planner import pending_actions, plan_next
from tasks import evidence
from tasks.actions import Cycle
from tasks.evidence.cycles import find_cycle
from tasks.mission import Mission, load_mission
from tasks.reporting import views
from tasks.runtime.paths import reports_root
from tasks.stages._common import keep_mission_as_run, open_cycle


@task(name="start-cycle", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def start_cycle(mission: Mission, mission_path: str, allow_random_init: bool, fan_out: bool = False,
                plan: dict | None = None) -> Cycle:
    """The cycle's parent run, its parameters, the mission as run, and the plan it executes (pending_actions.json).

    ``plan`` comes from the planner when this cycle was planned from the last
    one (flows/cycle.py): its tags chain the cycles, its actions carry retries
    and escalations.
    """
    started, cycle_id, experiment, run, report_dir = open_cycle(mission.id, tags=(plan or {}).get("tags", {}))
    g = mission.gates
    run.params({"mission_path": mission_path, "dataset": mission.dataset.kind, "samples": mission.dataset.samples,
                "seed": mission.dataset.seed, "allow_random_init": allow_random_init, "fan_out": fan_out,
                "models": ",".join(m.name for m in mission.models), "gates.metric": g.metric,
                "gates.min_models_tested": g.min_models_tested, "gates.min_models_collapsed": g.min_models_collapsed,
                "gates.imbalance_threshold": g.imbalance_threshold, "gates.alpha": g.alpha})
    actions = (plan or {}).get("actions") or pending_actions(mission, started)
    for entry in actions:  # deadlines count from this cycle's start
        entry["deadline"] = (started + timedelta(hours=entry["deadline_hours"])).isoformat(timespec="minutes")
    escalated = tuple((a["id"], a.get("escalation", {}).get("error", "")) for a in actions if a.get("plan") == "escalated")
    run.artifact(views.write_pending_actions(actions, report_dir), "handoff")
    keep_mission_as_run(run, mission, report_dir)
    return Cycle(mission, mission_path, cycle_id, experiment, run.run_id, report_dir, started, allow_random_init, fan_out,
                 escalated)


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
