"""A small Week-1 cycle logged to the real MLflow store (SQLite in the session's temp home), the way the stages log it.

No Prefect: runs are opened with ``tasks.evidence.start_run`` and carry the
tags, params and metrics that ``tasks/stages/`` and ``tasks/actions.py`` write.
"""
from __future__ import annotations

import tempfile
import uuid
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag

from tasks import evidence
from tasks.evidence import schema
from tasks.mission import Mission, load_mission
from tasks.stats import comparisons, controls, per_model
from tasks.stats.gates import CALIBRATION, RANDOM_INIT, SUBJECT, ModelVerdict, decide
from tasks.stats.reliance import reliance

DEFAULT_MISSION = Path(__file__).resolve().parents[3] / "missions" / "week1.yaml"

# Per-sample image shares with a known verdict at threshold 0.80: text-dominant and vision-dominant collapse.
SHARES = {"zoo-text-dominant": 0.02, "zoo-balanced": 0.5, "zoo-vision-dominant": 0.97}
# Values that pass every acceptance criterion of missions/week1.yaml.
PASSING = {
    "T1": {"models_loaded": 3, "external_models_loaded": 1, "trace_coverage_min": 1, "layers_traced_min": 2, "models_requested": 4, "models_blocked": 1},
    "T2": {"packages_missing": 0, "test_inference_pairs": 4, "disk_free_gb": 50.5},
    "T3": {"models_analysed": 3, "bootstrap_resamples": 9999, "alpha": 0.05},
    "T4": {"models_diagnosed": 3, "samples_scored_min": 32, "plots_per_model_min": 3, "dataset_samples": 32},
    "T5": {"bib_entries": 21, "unresolved_citations": 0},
    "T6": {"models_loaded": 1, "external_models_loaded": 1},
    "T7": {"placeholders_filled": 4, "uncited_numbers": 0},
}


def _write(run_id: str, metrics: dict | None = None, params: dict | None = None, tags: dict | None = None) -> None:
    """What RunLog.metrics/params/tags write, in one log_batch: each SQLite commit costs tens of ms here."""
    evidence.client().log_batch(run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in (metrics or {}).items()],
                                params=[Param(k, str(v)) for k, v in (params or {}).items()],
                                tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])


@pytest.fixture(scope="session")
def week1() -> Mission:
    """The Week-1 mission cut to OpenCLIP (with its one alternative) and the zoo: the cycle these tests log."""
    m = load_mission(DEFAULT_MISSION)
    keep = ("openclip-vit-b-32", "zoo-text-dominant", "zoo-balanced", "zoo-vision-dominant")
    return m.model_copy(update={"models": tuple(m.model(n) for n in keep),
                                "alternatives": (m.model("openclip-vit-b-32-openai"),)})


def _shares(center: float, n: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(center + rng.normal(0, 0.02, n), 0, 1)


def log_cycle(mission: Mission, *, statuses: dict[str, tuple[str, str]] | None = None,
              metrics: dict[str, dict[str, float]] | None = None, cycle_tags: dict[str, str] | None = None,
              blocked: dict[str, str] | None = None, random_init: tuple[str, ...] = (),
              skip: tuple[str, ...] = (), durations: bool = True) -> str:
    """Log one cycle; returns the cycle run id.

    ``statuses``: action id → (fa.status, fa.reason), default Completed. ``metrics``: per-action overrides.
    ``blocked``: model name → reason, for models of the adapters (T1) and alternatives (T6) actions.
    ``skip``: actions with no run. ``durations=False`` leaves out the measured duration_s metric.
    """
    statuses, metrics, blocked = statuses or {}, metrics or {}, blocked or {}
    exp = evidence.ensure_experiment(f"agents-{uuid.uuid4().hex[:8]}")
    cycle_id = f"cycle-{uuid.uuid4().hex[:6]}"
    cycle = evidence.start_run(exp, f"cycle {cycle_id}", tags={schema.KIND: "cycle", schema.CYCLE_ID: cycle_id,
                                                               schema.MISSION: mission.id, **(cycle_tags or {})})
    _write(cycle.run_id, params={"models": ",".join(m.name for m in mission.models), "dataset": mission.dataset.kind,
                                 "samples": 32, "seed": mission.dataset.seed})
    for action in mission.actions:
        if action.id in skip:
            continue
        status, reason = statuses.get(action.id, ("Completed", ""))
        run = evidence.start_run(exp, f"{action.id} {action.title}", parent=cycle.run_id,
                                 tags={schema.KIND: "action", schema.ACTION_ID: action.id, schema.STATUS: status,
                                       schema.REASON: reason, schema.MITIGATION: "fix it" if reason else ""})
        _write(run.run_id,
               metrics=PASSING.get(action.id, {}) | metrics.get(action.id, {})
               | ({"duration_s": 1.25, "peak_rss_mb": 512.5, "peak_gpu_mb": 0} if durations else {}),
               params={"priority": action.priority, "owner": action.owner, "stage": action.stage,
                       "deadline_hours": action.deadline_hours, "depends_on": ",".join(action.depends_on) or "none"}
               | {schema.acceptance_key(c.metric): c.value for c in action.acceptance})
        if action.stage == "adapters":
            _models(exp, run.run_id, [m.name for m in mission.models], blocked, random_init)
        elif action.stage == "alternative_models":
            _models(exp, run.run_id, [m.name for m in mission.alternatives], blocked, random_init)
        elif action.stage == "diagnostics":
            _diagnostics(exp, run, [m.name for m in mission.models if m.name not in blocked])
        elif action.stage == "statistics":
            _statistics(run, mission, [m.name for m in mission.models if m.name not in blocked], random_init, cycle,
                        tuple(m.name for m in mission.models if m.name in blocked and not m.calibration))
        run.finish("FAILED" if status == "Failed" else "FINISHED")
    cycle.finish()
    return cycle.run_id


def _models(exp: str, parent: str, names: list[str], blocked: dict[str, str], random_init: tuple[str, ...]) -> None:
    for name in names:
        tags = {schema.KIND: "model", schema.MODEL: name}
        if name in blocked:
            tags |= {schema.STATUS: "Blocked", schema.REASON: blocked[name], schema.MITIGATION: "download the weights"}
            values = {"duration_s": 0.5}
        else:
            tags |= {schema.STATUS: "Completed", schema.REASON: "", schema.RANDOM_INIT: str(name in random_init).lower()}
            values = {"duration_s": 0.5, "layers_traced": 2, "trace_coverage": 1}
        run = evidence.start_run(exp, name, parent=parent, tags=tags)
        _write(run.run_id, metrics=values)
        run.finish()


def _diagnostics(exp: str, run: evidence.RunLog, names: list[str]) -> None:
    run.params({"dataset": "synthetic", "dataset_hash": "abc123def456", "metrics_version": "1"})
    for i, name in enumerate(names):
        child = evidence.start_run(exp, name, parent=run.run_id, tags={schema.KIND: "model", schema.MODEL: name,
                                                                      schema.STATUS: "Completed", schema.REASON: "", schema.CACHED: "false"})
        _write(child.run_id, metrics={"samples_scored": 32, "plots": 3, "duration_s": 0.75 + i,
                                      "modality_shapley_v_mean": SHARES.get(name, 0.5), "layer/0/attn_visual_share": 0.4})
        if i == 0:  # one per-sample table is enough to see model artifacts listed
            child.table(pd.DataFrame({"sample_id": range(4), "modality_shapley_v": [0.1, 0.2, 0.3, 0.4]}), "per_sample.csv")
        child.finish()
    with tempfile.TemporaryDirectory() as tmp:
        note = Path(tmp) / "notes.txt"
        note.write_text("diagnostics ran\n")
        run.artifact(note, "logs")


def _statistics(run: evidence.RunLog, mission: Mission, names: list[str], random_init: tuple[str, ...],
                cycle: evidence.RunLog, blocked: tuple[str, ...] = ()) -> None:
    """The statistics stage's logging, with the real summary, reliance, Holm, verdict and decision functions."""
    gates = mission.gates
    metrics, params, verdicts = {}, {}, []
    entries = {m.name: m for m in mission.models}
    role = {n: CALIBRATION if entries[n].calibration else RANDOM_INIT if n in random_init else SUBJECT for n in names}
    data = {n: _shares(SHARES.get(n, 0.5), seed=seed) for seed, n in enumerate(names)}
    summaries = {n: per_model.summarize(x, baseline=gates.baseline, n_resamples=999, seed=0) for n, x in data.items()}
    rel = {n: reliance(x, gates.imbalance_threshold, gates.equivalence_margin, gates.alpha, n_resamples=999) for n, x in data.items()}
    raw = {n: per_model.collapse_verdict(summaries[n], gates.imbalance_threshold, gates.alpha, rel[n]) for n in names}
    family = comparisons.holm({n: raw[n].p for n in names if role[n] == SUBJECT}, alpha=gates.alpha)
    p_holm = dict(zip(family.names, family.adjusted))
    for name in names:
        summary = summaries[name]
        verdict = per_model.collapse_verdict(summary, gates.imbalance_threshold, gates.alpha, rel[name], p_holm.get(name))
        call = per_model.balance_call(summary, per_model.tost(data[name], margin=gates.equivalence_margin), verdict, gates.alpha, rel[name])
        key = partial(schema.model_key, name)  # key("verdict", "") -> <name>/verdict/
        metrics |= summary.as_dict(key(gates.metric, "")) | verdict.as_dict(key("verdict", ""))
        params |= summary.as_params(key(gates.metric, "")) | verdict.as_params(key("verdict", ""))
        params |= {key("role"): role[name], key("architecture"): entries[name].adapter, key("call"): call.label}
        passed = None
        if role[name] == CALIBRATION:
            planted = controls.planted_direction(entries[name].adapter, entries[name].source)
            passed = controls.control_passed(planted, controls.measured_direction(verdict.collapsed, verdict.dominant,
                                                                                  call.label, call.direction))
            metrics[key("control", "passed")] = passed
        verdicts.append(ModelVerdict(name, role[name], verdict.collapsed, entries[name].adapter, passed))
    result = decide(verdicts, gates, blocked)
    _write(run.run_id, metrics=metrics | {"gates/models_tested": result.models_tested, "gates/models_collapsed": result.models_collapsed},
           params=params,
           tags={schema.DECISION: result.decision, schema.RULE: result.rule, schema.COLLAPSED_MODELS: ",".join(result.collapsed) or "none",
                 schema.TESTED_MODELS: ",".join(result.tested) or "none", schema.EXCLUDED_MODELS: ",".join(result.controls) or "none",
                 schema.BLOCKED_MODELS: ",".join(result.blocked) or "none"})
    cycle.tags({schema.DECISION: result.decision})


@pytest.fixture(scope="session")
def cycle_logger():
    return log_cycle
