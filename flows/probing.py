"""The probing cycle as a Prefect flow: the DAG is this file, the mission supplies its parameters.

    models (P1) ─▶ extraction (P2) ─▶ probes (P3) ─▶ decision (P5) ─▶ quality review ─▶ handoff
                                  └─▶ alignment (P4)
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.states import Completed

from tasks import evidence, progress
from tasks.actions import BLOCKED, FAILED, Cycle, Outcome, run_action
from tasks.adapters.registry import available
from tasks.mission import MissionError
from tasks.probing.ground_truth import load_spatial
from tasks.probing.mission import ProbingMission, load_probing_mission
from tasks.stages.probing import (alignment_stage, decision_stage, extraction_stage, models_stage, probes_stage,
                                  start_cycle, write_reports)
from tasks.stages.review import quality_review

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


STAGES = ("models", "extraction", "probes", "alignment", "decision")  # the cycle's order; the reports follow


def execute(cycle: Cycle, stage: str, outcomes: dict[str, Outcome], stage_task, *args) -> Outcome | None:
    """Run the mission's action for ``stage`` unless a dependency did not complete; a crash is a Failed outcome."""
    action = cycle.mission.for_stage(stage)
    if action is None:
        return None
    progress.report("stage", f"{action.id} {stage}", STAGES.index(stage), len(STAGES) + 1)
    return run_action(cycle, action, outcomes, stage_task, *args)


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
