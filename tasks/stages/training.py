"""The Prefect tasks of the training mission: thin wrappers that log evidence around the pure modules.

    train-model (cached per config + data + code; resumes from its checkpoint)
    rediagnose-model (cached per trained model + held-out set + metric suite)
    compare (paired tests, Holm, the decision per variant) ─ checklist ─ reports (verified)
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric
from prefect import task
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy

from agents.quality_officer import assess
from tasks import evidence
from tasks.actions import COMPLETED, NotRetryable, Outcome, open_child, record, tracked, transient_only
from tasks.diagnostics.run import METRICS_VERSION, diagnose
from tasks.evidence import schema
from tasks.runtime.paths import cache_dir
from tasks.stages._common import keep_mission_as_run, open_cycle
from tasks.training import checklist, plots
from tasks.training.compare import compare_variants
from tasks.training.config import TrainConfig
from tasks.training.data import make_task
from tasks.training.mission import Data, TrainingMission
from tasks.training.report import ablation_groups, action, training_runs
from tasks.training.train import TrainResult, train
from tasks.training.trained_model import as_loaded_model

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What a trained model depends on (its cache key), and what its re-diagnosis adds: editing a report or the
# mission schema retrains nothing.
TRAIN_CODE = ("tasks/training/config.py", "tasks/training/data.py", "tasks/training/model.py", "tasks/training/losses.py",
              "tasks/training/ogm_ge.py", "tasks/training/gradient_flow.py", "tasks/training/train.py",
              "tasks/adapters/zoo/calibration.py", "tasks/data/synthetic.py", "tasks/data/vocabulary.py")
DIAGNOSE_CODE = ("tasks/training/trained_model.py", "tasks/diagnostics/*.py")


class BudgetExhausted(NotRetryable):
    """The mission's time budget ran out before this training started."""


@dataclass(frozen=True)
class TrainingCycle:
    mission: TrainingMission
    mission_path: str
    cycle_id: str
    experiment_id: str
    run_id: str
    report_dir: Path
    deadline: float          # time.time() after which no new training starts (budget.max_minutes)


def code_version(patterns: tuple[str, ...] = TRAIN_CODE) -> str:
    digest = hashlib.sha256(METRICS_VERSION.encode())
    for pattern in patterns:
        for path in sorted(PROJECT_ROOT.glob(pattern)):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def train_key(config: TrainConfig, data: Data, seed: int) -> str:
    blob = json.dumps({"config": config.model_dump(mode="json"), "data": data.model_dump(mode="json"), "seed": seed,
                       "code": code_version()}, sort_keys=True)
    return "train-" + hashlib.sha256(blob.encode()).hexdigest()[:32]


def _train_cache_key(context, parameters) -> str:
    return train_key(parameters["config"], parameters["data"], parameters["seed"])


def _diagnose_cache_key(context, parameters) -> str:
    r: TrainResult = parameters["result"]
    blob = json.dumps({"model": f"{r.config.digest()}-{r.seed}", "code": code_version(TRAIN_CODE + DIAGNOSE_CODE),
                       "data": parameters["data"].model_dump(mode="json"), "metrics": list(parameters["metrics"])})
    return "rediagnose-" + hashlib.sha256(blob.encode()).hexdigest()[:32]


def checkpoint_path(key: str) -> Path:
    return cache_dir("training", "checkpoints") / f"{key}.pt"


# ------------------------------------------------------------------ training and re-diagnosis


@task(name="train-model", persist_result=True, cache_policy=CacheKeyFnPolicy(cache_key_fn=_train_cache_key),
      retries=1, retry_delay_seconds=2, retry_condition_fn=transient_only)
def train_model(config: TrainConfig, data: Data, seed: int, run_id: str, deadline: float) -> TrainResult:
    """Train one (config, seed), resuming from its checkpoint; each checkpoint is logged to ``run_id`` as an artifact."""
    key = train_key(config, data, seed)
    ckpt = checkpoint_path(key)
    if time.time() > deadline and not ckpt.exists():
        raise BudgetExhausted("the mission's budget.max_minutes ran out before this training started")
    run = evidence.RunLog(run_id)

    def logged(path: Path, step: int) -> None:
        run.artifact(path, "checkpoints")
        evidence.client().log_batch(run_id, metrics=[Metric("checkpoint_step", step, int(time.time() * 1000), step)])

    task_data = make_task(data.train_samples, data.seed, data.text_reliability, config.model.image_size)
    return train(config, task_data, seed, checkpoint=ckpt, on_checkpoint=logged)


def eval_task(data: Data, image_size: int):
    """The held-out set every model is diagnosed on (data seed + 1: never trained on)."""
    return make_task(data.eval_samples, data.seed + 1, data.text_reliability, image_size)


@task(name="rediagnose-model", persist_result=True, cache_policy=CacheKeyFnPolicy(cache_key_fn=_diagnose_cache_key))
def rediagnose(result: TrainResult, data: Data, metrics: tuple[str, ...], name: str) -> pd.DataFrame:
    """The metric suite on the held-out samples, plus each sample's correctness (score > 0 is the positive class)."""
    held_out = eval_task(data, result.config.model.image_size)
    model = as_loaded_model(result, name)
    perms = 16 if "mm_shap_v" in metrics else 0
    ps = diagnose(model, held_out.samples, mm_shap_permutations=perms, keep_maps=0).per_sample
    correct = ((ps["v_full"].to_numpy() > 0) == held_out.targets.numpy().astype(bool)).astype(float)
    return ps[["sample_id", "v_full", *metrics]].assign(correct=correct)


def log_training(run: evidence.RunLog, result: TrainResult, cached: bool) -> None:
    """Facts as metrics, losses and gradient norms as MLflow step curves, the curves as tables."""
    run.metrics(result.facts)
    curve_metrics = [Metric(schema.train_curve_key(col), float(v), 0, int(step))
                     for col in ("loss_total", "loss_task", "loss_visual", "loss_text", "k_image", "k_text")
                     for step, v in zip(result.curves["step"], result.curves[col])]
    curve_metrics += [Metric(schema.grad_curve_key(r.pathway, r.layer), float(r.norm), 0, int(r.step))
                      for r in result.grads.itertuples()]
    ts = int(time.time() * 1000)
    curve_metrics = [Metric(m.key, m.value, ts, m.step) for m in curve_metrics]
    for i in range(0, len(curve_metrics), 900):
        evidence.client().log_batch(run.run_id, metrics=curve_metrics[i:i + 900])
    run.table(result.curves, "curves.csv")
    run.table(result.grads, "grads.csv")
    run.tags({schema.CACHED: str(cached).lower()})


def log_rediagnosis(run: evidence.RunLog, per_sample: pd.DataFrame, metrics: tuple[str, ...]) -> None:
    run.metrics({schema.eval_key(schema.mean_key(m)): float(per_sample[m].mean()) for m in metrics if per_sample[m].notna().any()}
                | {schema.eval_key("accuracy"): float(per_sample["correct"].mean()), schema.eval_key("samples"): len(per_sample)})
    run.table(per_sample, "per_sample.csv")


# ------------------------------------------------------------------ comparison and decision


@task(name="compare-variants", cache_policy=NO_CACHE)
def compare_stage(cycle: TrainingCycle, per_sample: pd.DataFrame) -> Outcome:
    """Each variant vs the baseline (seed-matched, same samples), Holm across variants, ADOPT / PARTIAL / ROLLBACK."""
    m = cycle.mission
    g = m.gates
    run = open_child(cycle, cycle.run_id, "COMPARE paired comparison and decisions", {schema.KIND: "action", schema.ACTION_ID: "COMPARE"})
    with tracked(run):
        variants = [v.name for v in m.variants if v.name in set(per_sample["config"])]
        result = compare_variants(per_sample, m.baseline.name, variants, g.metric, g.min_visual_share, g.max_accuracy_drop,
                                  g.alpha, g.n_resamples)
        base = per_sample[per_sample["config"] == m.baseline.name]
        values: dict[str, float] = {"gates/min_visual_share": g.min_visual_share, "gates/max_accuracy_drop": g.max_accuracy_drop,
                                    "gates/alpha": g.alpha, "family_size": len(variants), "n_resamples": g.n_resamples,
                                    "baseline/share_mean": float(base[g.metric].mean()), "baseline/accuracy": float(base["correct"].mean()),
                                    "baseline/seeds": base["seed"].nunique()}
        params: dict[str, str] = {"correction": "holm", "metric": g.metric, "p_value": "sign-flip permutation (perm_p)"}
        for v, c in result.items():
            key = partial(schema.variant_key, v)  # key("share", "mean") -> <variant>/share/mean
            values |= {key("share", k): x for k, x in c.share.as_dict().items()}
            values |= {key("accuracy", k): x for k, x in c.accuracy.as_dict().items()}
            values |= {key("p_holm"): c.p_holm, **c.criteria.as_dict(key("criteria", "")), key("seeds"): len(c.per_seed)}
            values |= {key(schema.seed_part(s), k): x for s, (ds, da) in c.per_seed.items()
                       for k, x in (("share_diff", ds), ("acc_diff", da))}
            params[key("decision")] = c.decision
        run.metrics({k: x for k, x in values.items() if x is not None and x == x})  # NaN stays unlogged: shown as n/a
        run.params(params)
        run.tags({schema.variant_decision_tag(v): c.decision for v, c in result.items()})
        run.table(per_sample, "per_sample_all.csv")
        folder = cycle.report_dir / "handoff" / "plots"
        rows = pd.DataFrame([{"variant": v, "decision": c.decision, "share_diff": c.share.mean_diff, "share_low": c.share.ci_low,
                              "share_high": c.share.ci_high, "acc_diff": c.accuracy.mean_diff, "acc_low": c.accuracy.ci_low,
                              "acc_high": c.accuracy.ci_high} for v, c in result.items()])
        drawn = [plots.before_after(rows, folder / "before_after.png")] if len(rows) else []
        drawn += _ablations(cycle, per_sample, folder)
        for path in drawn:
            run.artifact(path, "plots")
        run.metrics({"plots": len(drawn)})
    return record(run, Outcome("COMPARE", COMPLETED, run.run_id, data={v: c.decision for v, c in result.items()}))


def _ablations(cycle: TrainingCycle, per_sample: pd.DataFrame, folder: Path) -> list[Path]:
    m = cycle.mission
    drawn = []
    means = per_sample.groupby("config").agg(share=(m.gates.metric, "mean"), accuracy=("correct", "mean"))
    for parameter, names in ablation_groups(m).items():
        rows = [{"value": m.baseline.config.value(parameter), "label": m.baseline.name}]
        rows += [{"value": m.variant(n).deltas[0].new, "label": n} for n in names]
        points = pd.DataFrame(rows).join(means, on="label").dropna()
        if len(points) >= 2 and pd.api.types.is_numeric_dtype(points["value"]):
            drawn.append(plots.ablation(points, parameter, folder / f"ablation_{parameter.replace('.', '_')}.png"))
    return drawn


@task(name="checklist", cache_policy=NO_CACHE)
def checklist_stage(cycle: TrainingCycle) -> Outcome:
    """Every checklist item evaluated on the logged evidence; counts logged so the handoff can cite them."""
    tree = evidence.read_run(cycle.run_id)
    run = open_child(cycle, cycle.run_id, "CHECKLIST verification checklist", {schema.KIND: "action", schema.ACTION_ID: "CHECKLIST"})
    with tracked(run):
        results = checklist.evaluate(cycle.mission.checklist, training_runs(tree), action(tree, "COMPARE"),
                                     [v.name for v in cycle.mission.variants])
        values = {}
        for r in results:
            key = partial(schema.checklist_key, r.item.id)  # key("passed") -> checklist/<item>/passed
            values |= {key("checked"): r.checked, key("passed_count"): r.passed_count, key("passed"): int(r.passed),
                       key("threshold"): r.item.value}
        values |= {schema.checklist_key("items"): len(results), schema.checklist_key("items_passed"): sum(r.passed for r in results)}
        run.metrics(values)
    return record(run, Outcome("CHECKLIST", COMPLETED, run.run_id))


# ------------------------------------------------------------------ the cycle run and the reports


def start_cycle(mission: TrainingMission, mission_path: str) -> TrainingCycle:
    _, cycle_id, experiment, run, report_dir = open_cycle(mission.id, kind="training")
    run.params({"mission_path": mission_path, "seeds": ",".join(map(str, mission.seeds)), "metric": mission.gates.metric,
                "variants": ",".join(v.name for v in mission.variants), "eval_samples": mission.data.eval_samples,
                "budget.max_minutes": mission.budget.max_minutes, "budget.max_training_runs": mission.budget.max_training_runs})
    keep_mission_as_run(run, mission, report_dir)
    return TrainingCycle(mission, mission_path, cycle_id, experiment, run.run_id, report_dir,
                         time.time() + 60 * mission.budget.max_minutes)


@task(name="training-reports", cache_policy=NO_CACHE)
def write_reports(cycle: TrainingCycle) -> dict[str, object]:
    """Handoff and paper section from evidence, figures drawn from logged tables, verified like every report."""
    from tasks.training import report

    tree = evidence.read_run(cycle.run_id)
    paths = report.render(cycle.mission, tree, cycle.report_dir)
    result = assess([p for p in paths if p.suffix == ".md"])
    quality = open_child(cycle, cycle.run_id, "quality-review", {schema.KIND: "quality"})
    verdict = "VERIFIED" if result.verified else "NOT VERIFIED"
    quality.metrics({"citations_checked": result.citations_checked, "findings": len(result.findings)})
    quality.tags({schema.VERDICT: verdict})
    if result.findings:
        (cycle.report_dir / "handoff" / "verification_findings.txt").write_text("\n".join(result.findings) + "\n", encoding="utf-8")
    for path in paths:
        evidence.RunLog(cycle.run_id).artifact(path, str(path.parent.relative_to(cycle.report_dir)))
    quality.finish()
    compare = action(tree, "COMPARE")
    decisions = schema.variant_decisions(compare.tags if compare else {})
    summary = ", ".join(f"{v} {d}" for v, d in decisions.items()) or "no variant compared"
    evidence.RunLog(cycle.run_id).tags({schema.DECISION: summary})
    return {"handoff": str(cycle.report_dir / "handoff" / "execution_progress_update.md"), "verdict": verdict,
            "findings": result.findings, "decision": summary, "decisions": decisions}
