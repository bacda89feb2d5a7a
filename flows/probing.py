"""The probing cycle as a Prefect flow: the DAG is this file, the mission supplies its parameters.

    models (P1) ─▶ extraction (P2) ─▶ probes (P3) ─▶ decision (P5) ─▶ quality review ─▶ handoff
                                  └─▶ alignment (P4)
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from agents.planner import pending_actions
from tasks import evidence, progress, reporting
from tasks.actions import BLOCKED, FAILED, Cycle, Outcome
from tasks.adapters.registry import available
from tasks.mission import MissionError
from tasks.runtime.paths import reports_root
from tasks.probing.ground_truth import load_spatial
from tasks.probing.mission import ProbingMission, load_probing_mission
from tasks.probing.stages import (alignment_stage, decision_stage, extraction_stage, models_stage, probes_stage,
                                  write_reports)
from tasks.recovery import close_killed_cycles, owner_tags
from tasks.stages import quality_review

DEFAULT_MISSION = Path(__file__).resolve().parent.parent / "missions" / "p4-spatial-probing.yaml"


def prepare_probing_mission(mission_path: str, models: list[str] | None = None, samples: int | None = None) -> ProbingMission:
    """Load, apply the CLI overrides, and check what must hold before anything runs."""
    mission = load_probing_mission(mission_path)
    if models:
        known = [m.name for m in mission.models]
        unknown = [m for m in models if m not in known]
        if unknown:
            raise MissionError(f"--models: unknown model(s) {unknown}: use names from {mission_path}: {known}")
        mission = mission.model_copy(update={"models": tuple(mission.model(n) for n in models)})
    if samples is not None:
        if samples < 20:
            raise MissionError(f"--samples {samples}: use at least 20 samples (the probes need a train and a test split)")
        mission = mission.model_copy(update={"data": mission.data.model_copy(update={"samples": samples})})
    adapters = available()
    for m in mission.models:
        if m.adapter not in adapters:
            raise MissionError(f"{mission_path}: model {m.name} uses unknown adapter {m.adapter!r}: use one of {sorted(adapters)}")
    return mission


@task(name="start-probing-cycle", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def start_cycle(mission: ProbingMission, mission_path: str, allow_random_init: bool) -> Cycle:
    started = datetime.now(timezone.utc)
    cycle_id = started.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    experiment = evidence.ensure_experiment(mission.id)
    close_killed_cycles(experiment)
    run = evidence.start_run(experiment, f"cycle {cycle_id}", tags={"fa.kind": "cycle", "fa.cycle_id": cycle_id,
                                                                    "fa.mission": mission.id, "fa.mission_kind": "probing",
                                                                    "fa.cycle_number": "1", **owner_tags()})
    run.params({"mission_path": mission_path, "data": mission.data.kind, "samples": mission.data.samples,
                "seed": mission.data.seed, "allow_random_init": allow_random_init,
                "models": ",".join(m.name for m in mission.models)})
    report_dir = reports_root() / mission.id / cycle_id
    actions = pending_actions(mission, started)
    for entry in actions:
        entry["deadline"] = (started + timedelta(hours=entry["deadline_hours"])).isoformat(timespec="minutes")
    run.artifact(reporting.write_pending_actions(actions, report_dir), "handoff")
    as_run = report_dir / "mission.yaml"
    as_run.write_text(yaml.safe_dump(mission.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    run.artifact(as_run, "mission")
    return Cycle(mission, mission_path, cycle_id, experiment, run.run_id, report_dir, started, allow_random_init)


STAGES = ("models", "extraction", "probes", "alignment", "decision")  # the cycle's order; the reports follow


def execute(cycle: Cycle, stage: str, outcomes: dict[str, Outcome], stage_task, *args) -> Outcome | None:
    """Run the mission's action for ``stage`` unless a dependency did not complete; a crash is a Failed outcome."""
    from tasks.actions import dependency_block, outcome_of

    action = cycle.mission.for_stage(stage)
    if action is None:
        return None
    progress.report("stage", f"{action.id} {stage}", STAGES.index(stage), len(STAGES) + 1)
    outcome = dependency_block(cycle, action, outcomes)
    if outcome is None:
        outcome = outcome_of(cycle, action, stage_task(cycle, action, *args, return_state=True))
    outcomes[action.id] = outcome
    return outcome


@flow(name="probing-cycle", log_prints=True)
def probing_cycle(mission_path: str = str(DEFAULT_MISSION), models: list[str] | None = None, samples: int | None = None,
                  allow_random_init: bool = False):
    """Run a probing cycle: open, extract, probe, align, decide, and write the verified handoff."""
    mission = prepare_probing_mission(mission_path, models, samples)
    cycle = start_cycle(mission, mission_path, allow_random_init)
    data = load_spatial(mission.data)
    done: dict[str, Outcome] = {}

    opened = execute(cycle, "models", done, models_stage)
    extracted = execute(cycle, "extraction", done, extraction_stage, (opened.data if opened else None) or {}, data)
    features = (extracted.data if extracted else None) or {}
    probed = execute(cycle, "probes", done, probes_stage, features, data)
    execute(cycle, "alignment", done, alignment_stage, features)
    execute(cycle, "decision", done, decision_stage, probed.run_id if probed else "", opened.run_id if opened else "")

    progress.report("stage", "quality review and reports", len(STAGES), len(STAGES) + 1)
    counts = quality_review(cycle)
    reports = write_reports(cycle)
    evidence.RunLog(cycle.run_id).finish()
    message = (f"{counts['Completed']} actions completed, {counts[BLOCKED]} blocked, {counts[FAILED]} failed; "
               f"decision {reports['decision']}; handoff {reports['verdict']}")
    return Completed(message=message, data={**reports, "cycle_id": cycle.cycle_id, "run_id": cycle.run_id, "counts": counts})
