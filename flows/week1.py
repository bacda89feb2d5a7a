"""The Week-1 cycle as a Prefect flow: the DAG is this file, the mission supplies its parameters.

    environment check (T2) ─▶ adapter per model (T1) ─▶ diagnostics per model (T4) ─▶ statistics (T3)
    alternative models (T6) ─▶ literature (T5) ─▶ paper drafts (T7) ─▶ quality review ─▶ reports
"""
from __future__ import annotations

from pydantic import ValidationError
from prefect import flow
from prefect.states import Completed

from flows.diagnose import dispatch
from tasks import evidence, progress
from tasks.actions import BLOCKED, FAILED, Cycle, Outcome, run_action, stage_label
from tasks.adapters.registry import available
from tasks.mission import SAMPLES_MAX, Mission, MissionError, Runtime, load_mission
from tasks.runtime.paths import DEFAULT_MISSION
from tasks.stages.cycle import start_cycle
from tasks.stages.diagnostics import diagnostics_stage
from tasks.stages.environment import check_environment
from tasks.stages.literature import literature_stage
from tasks.stages.models import adapters_stage
from tasks.stages.paper import paper_stage
from tasks.stages.reports import write_reports
from tasks.stages.review import quality_review
from tasks.stages.statistics import statistics_stage


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


def stage_count(mission: Mission) -> int:
    """The mission's actions, then the quality review and the reports."""
    return len(mission.actions) + 2


def execute(cycle: Cycle, stage: str, outcomes: dict[str, Outcome], stage_task, *args) -> Outcome | None:
    """Run the mission's action for ``stage`` unless a dependency blocks it; a crash is a Failed outcome."""
    action = cycle.mission.for_stage(stage)
    if action is None:
        return None
    progress.report("stage", stage_label(action), len(outcomes), stage_count(cycle.mission))
    return run_action(cycle, action, outcomes, stage_task, *args)


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
