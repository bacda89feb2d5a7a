"""The Week-1 cycle as a Prefect flow: the DAG is this file, the mission supplies its parameters.

    environment check (T2) ─▶ adapter per model (T1) ─▶ diagnostics per model (T4) ─▶ statistics (T3)
    alternative models (T6) ─▶ literature (T5) ─▶ paper drafts (T7) ─▶ quality review ─▶ reports
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import yaml
from pydantic import ValidationError
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from agents.planner import pending_actions
from flows.diagnose import dispatch
from tasks import evidence, progress, reporting
from tasks.actions import BLOCKED, FAILED, Cycle, Outcome, dependency_block, escalation_block, outcome_of, stage_label
from tasks.adapters.registry import available
from tasks.mission import SAMPLES_MAX, Mission, MissionError, Runtime, load_mission
from tasks.runtime.paths import DEFAULT_MISSION, reports_root
from tasks.recovery import close_killed_cycles, owner_tags
from tasks.stages import (adapters_stage, check_environment, diagnostics_stage, literature_stage, paper_stage,
                          quality_review, statistics_stage, write_reports)


def prepare_mission(mission_path: str, models: list[str] | None = None, samples: int | None = None,
                    runtime: dict | None = None) -> Mission:
    """Load, apply the CLI overrides, and check what must hold before anything runs.

    ``runtime``: {"device", "dtype", "batch_size"} overrides of the mission's runtime section (None: keep).
    """
    mission = load_mission(mission_path)
    overrides = {k: v for k, v in (runtime or {}).items() if v is not None}
    if overrides:
        try:
            chosen = Runtime.model_validate({**mission.runtime.model_dump(), **overrides})
        except ValidationError as exc:
            problems = "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')} {e['input']!r}: {e['msg']}"
                                 for e in exc.errors())
            raise MissionError(f"{problems} (device: auto, cpu, cuda, cuda:N or mps; dtype: auto, float32, "
                               "float16 or bfloat16; batch size 1 to 4096)") from None
        mission = mission.model_copy(update={"runtime": chosen})
    if models is not None:
        known = {m.name for m in mission.models + mission.alternatives}
        if not models:
            raise MissionError("--models names no model: pass comma-separated names from the mission, "
                               "or leave --models out to run them all")
        repeated = sorted({m for m in models if models.count(m) > 1})
        if repeated:
            raise MissionError(f"--models names {repeated} more than once: name each model once")
        unknown = [m for m in models if m not in known]
        if unknown:
            raise MissionError(f"--models: unknown model(s) {unknown}: use names from {mission_path}: {sorted(known)}")
        chosen = tuple(mission.model(n) for n in models)
        mission = mission.model_copy(update={"models": chosen})
    if samples is not None:
        if samples < 8:
            raise MissionError(f"--samples {samples}: use at least 8 samples (statistics need them)")
        if samples > SAMPLES_MAX:
            raise MissionError(f"--samples {samples}: at most {SAMPLES_MAX} samples per cycle: pass a smaller number")
        mission = mission.model_copy(update={"dataset": mission.dataset.model_copy(update={"samples": samples})})
    adapters = available()
    for m in mission.models + mission.alternatives:
        if m.adapter not in adapters:
            raise MissionError(f"{mission_path}: model {m.name} uses unknown adapter {m.adapter!r}: use one of {sorted(adapters)}")
    return mission


@task(name="start-cycle", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def start_cycle(mission: Mission, mission_path: str, allow_random_init: bool, fan_out: bool = False,
                plan: dict | None = None) -> Cycle:
    """The cycle's parent run, its parameters, the mission as run, and the plan it executes (pending_actions.json).

    ``plan`` comes from the planner when this cycle was planned from the last
    one (flows/cycle.py): its tags chain the cycles, its actions carry retries
    and escalations.
    """
    started = datetime.now(timezone.utc)
    cycle_id = started.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    experiment = evidence.ensure_experiment(mission.id)
    close_killed_cycles(experiment)
    run = evidence.start_run(experiment, f"cycle {cycle_id}", tags={"fa.kind": "cycle", "fa.cycle_id": cycle_id, "fa.mission": mission.id,
                                                                    "fa.cycle_number": "1", **owner_tags(),
                                                                    **(plan or {}).get("tags", {})})
    g = mission.gates
    run.params({"mission_path": mission_path, "dataset": mission.dataset.kind, "samples": mission.dataset.samples,
                "seed": mission.dataset.seed, "allow_random_init": allow_random_init, "fan_out": fan_out,
                "models": ",".join(m.name for m in mission.models), "gates.metric": g.metric,
                "gates.min_models_tested": g.min_models_tested, "gates.min_models_collapsed": g.min_models_collapsed,
                "gates.imbalance_threshold": g.imbalance_threshold, "gates.alpha": g.alpha})
    report_dir = reports_root() / mission.id / cycle_id
    actions = (plan or {}).get("actions") or pending_actions(mission, started)
    for entry in actions:  # deadlines count from this cycle's start
        entry["deadline"] = (started + timedelta(hours=entry["deadline_hours"])).isoformat(timespec="minutes")
    escalated = tuple((a["id"], a.get("escalation", {}).get("error", "")) for a in actions if a.get("plan") == "escalated")
    run.artifact(reporting.write_pending_actions(actions, report_dir), "handoff")
    report_dir.mkdir(parents=True, exist_ok=True)
    as_run = report_dir / "mission.yaml"  # the mission with CLI overrides applied: what the next cycle plans from
    as_run.write_text(yaml.safe_dump(mission.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    run.artifact(as_run, "mission")
    return Cycle(mission, mission_path, cycle_id, experiment, run.run_id, report_dir, started, allow_random_init, fan_out,
                 escalated)


def stage_count(mission: Mission) -> int:
    """The mission's actions, then the quality review and the reports."""
    return len(mission.actions) + 2


def execute(cycle: Cycle, stage: str, outcomes: dict[str, Outcome], stage_task, *args) -> Outcome | None:
    """Run the mission's action for ``stage`` unless a dependency blocks it; a crash is a Failed outcome."""
    action = cycle.mission.for_stage(stage)
    if action is None:
        return None
    progress.report("stage", stage_label(action), len(outcomes), stage_count(cycle.mission))
    outcome = dependency_block(cycle, action, outcomes) or escalation_block(cycle, action)
    if outcome is None:
        outcome = outcome_of(cycle, action, stage_task(cycle, action, *args, return_state=True))
    outcomes[action.id] = outcome
    return outcome


@flow(name="week1-cycle", log_prints=True)
def week1_cycle(mission_path: str = str(DEFAULT_MISSION), models: list[str] | None = None, samples: int | None = None,
                allow_random_init: bool = False, bib_files: list[str] | None = None, fan_out: bool = False,
                plan: dict | None = None, runtime: dict | None = None):
    """Run the Week-1 cycle; ``fan_out`` runs each model's diagnostics as a ``diagnose-model`` deployment run;
    ``runtime`` overrides the mission's device, dtype and batch size."""
    mission = prepare_mission(mission_path, models, samples, runtime)
    cycle = start_cycle(mission, mission_path, allow_random_init, fan_out, plan)
    done: dict[str, Outcome] = {}

    execute(cycle, "environment", done, check_environment)
    adapters = execute(cycle, "adapters", done, adapters_stage, mission.models)
    opened = tuple(e for e in mission.models if any(m.key == e.name and m.ok for m in (adapters.data or [])))
    diagnostics = execute(cycle, "diagnostics", done, diagnostics_stage, opened, dispatch)
    random_init = tuple(m.key for m in (adapters.data or []) if m.ok and m.data["random_init"])
    statistics = execute(cycle, "statistics", done, statistics_stage, diagnostics.data if diagnostics else {}, random_init)
    execute(cycle, "alternative_models", done, adapters_stage, mission.alternatives)
    execute(cycle, "literature", done, literature_stage, tuple(bib_files or ()))
    execute(cycle, "paper", done, paper_stage, statistics.run_id if statistics else "")

    total = stage_count(mission)
    progress.report("stage", "quality review", total - 2, total)
    counts = quality_review(cycle)
    progress.report("stage", "reports", total - 1, total)
    reports = write_reports(cycle)
    progress.report("stage", "done", total, total)
    evidence.RunLog(cycle.run_id).finish()
    message = (f"{counts['Completed']} actions completed, {counts[BLOCKED]} blocked, {counts[FAILED]} failed; "
               f"decision {reports['decision']}; handoff {reports['verdict']}")
    return Completed(message=message, data={**reports, "cycle_id": cycle.cycle_id, "run_id": cycle.run_id, "counts": counts})
