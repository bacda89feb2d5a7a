"""The training mission's cycle as a Prefect flow: train each variant × seed, re-diagnose, compare, decide.

    train-model per (configuration, seed), fanned out, cached on config + data + code, resumable
        ─▶ rediagnose-model per trained model (the metric suite on the same held-out samples)
        ─▶ compare-variants (paired, Holm across variants, ADOPT / PARTIAL / ROLLBACK)
        ─▶ checklist ─▶ reports (handoff, paper section; verified against the evidence)
"""
from __future__ import annotations

import pandas as pd
import torch
from prefect import flow
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from tasks import evidence, progress
from tasks.actions import BLOCKED, COMPLETED, FAILED, Outcome, open_child, record, tracked
from tasks.evidence import schema
from tasks.training.mission import prepare_training_mission
from tasks.stages.training import (BudgetExhausted, TrainingCycle, checklist_stage, compare_stage, log_rediagnosis,
                                   log_training, rediagnose, start_cycle, train_key, train_model, write_reports)




@flow(name="training-cycle", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
def training_cycle(mission_path: str, samples: int | None = None):
    """Run a training mission (missions/week2-mitigation.yaml is the first)."""
    mission = prepare_training_mission(mission_path, samples)
    torch.set_num_threads(1)  # two trainings in parallel on two cores; each tiny model gains nothing from more
    cycle = start_cycle(mission, mission_path)
    progress.report("stage", "TRAIN train and re-diagnose", 0, 4)
    per_sample = _train_and_rediagnose(cycle)
    outcomes = {"TRAIN": per_sample is not None}
    if per_sample is not None and (per_sample["config"] == mission.baseline.name).any():
        progress.report("stage", "paired comparison", 1, 4)
        compare_stage(cycle, per_sample)
    progress.report("stage", "checklist", 2, 4)
    checklist_stage(cycle)
    progress.report("stage", "reports", 3, 4)
    reports = write_reports(cycle)
    evidence.RunLog(cycle.run_id).finish()
    message = f"training mission {mission.id}: {reports['decision']}; handoff {reports['verdict']}"
    return Completed(message=message, data={**reports, "cycle_id": cycle.cycle_id, "run_id": cycle.run_id, "ok": outcomes})


def _train_and_rediagnose(cycle: TrainingCycle) -> pd.DataFrame | None:
    """Every (configuration, seed) trained as its own task (two at a time), then re-diagnosed; one run each under TRAIN."""
    m = cycle.mission
    action = open_child(cycle, cycle.run_id, "TRAIN train and re-diagnose every variant × seed",
                        {schema.KIND: "action", schema.ACTION_ID: "TRAIN"})
    frames = []
    with tracked(action):
        jobs = {}
        for name, config in m.configs().items():
            for seed in m.seeds:
                run = open_child(cycle, action.run_id, f"{name} seed {seed}",
                                 {schema.KIND: "training", schema.CONFIG: name, schema.SEED: str(seed)})
                run.params({"config": name, "seed": seed, "train_key": train_key(config, m.data, seed),
                            **{f"cfg.{s}.{k}": v for s, part in config.model_dump().items() for k, v in part.items()}})
                jobs[name, seed] = (run, train_model.submit(config, m.data, seed, run.run_id, cycle.deadline))
        statuses = {COMPLETED: 0, BLOCKED: 0, FAILED: 0}
        for i, ((name, seed), (run, future)) in enumerate(jobs.items()):
            progress.report("model", f"{name} seed {seed}", i, len(jobs))
            state = future.wait() or future.state
            result = future.result(raise_on_failure=False)
            if not state.is_completed():
                status = BLOCKED if isinstance(result, BudgetExhausted) else FAILED
                mitigation = ("raise budget.max_minutes; a re-run reuses every finished training" if status == BLOCKED
                              else "see the flow run's logs; a re-run resumes from the last checkpoint")
                record(run, Outcome(f"{name}-{seed}", status, run.run_id, reason=f"{type(result).__name__}: {result}",
                                    mitigation=mitigation))
                statuses[status] += 1
                continue
            with tracked(run):
                log_training(run, result, cached=state.name == "Cached")
                per_sample = rediagnose(result, m.data, m.metrics, f"{name}-seed{seed}")
                log_rediagnosis(run, per_sample, m.metrics)
            frames.append(per_sample.assign(config=name, seed=seed))
            record(run, Outcome(f"{name}-{seed}", COMPLETED, run.run_id))
            statuses[COMPLETED] += 1
        action.metrics({"training_runs": len(jobs), "training_runs_completed": statuses[COMPLETED],
                        "training_runs_blocked": statuses[BLOCKED], "training_runs_failed": statuses[FAILED]})
    ok = statuses[COMPLETED] > 0
    record(action, Outcome("TRAIN", COMPLETED if ok else FAILED, action.run_id,
                           reason="" if ok else "no training run completed"))
    return pd.concat(frames, ignore_index=True) if frames else None
