"""T4: per-sample contributions and per-layer attention for every opened model, one child run per model.

A model's diagnostics run as a ``diagnose-model`` flow (``flows.diagnose``),
which calls ``diagnose_and_log``; the cached ``diagnose_model`` task computes,
and the stage reads every model's numbers back from the evidence store.
"""
from __future__ import annotations

import hashlib
import re

import pandas as pd
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.transactions import CommitMode, transaction

from tasks import evidence, progress
from tasks.actions import BLOCKED, COMPLETED, FAILED, Cycle, Outcome, action_run, action_task_name, record, tracked
from tasks.adapters.contract import ModelSpec
from tasks.adapters.registry import load_model
from tasks.data.datasets import load_dataset
from tasks.diagnostics import plots
from tasks.diagnostics.layers import imbalance_finding
from tasks.diagnostics.run import METRICS_VERSION, DiagnosticResult, diagnose
from tasks.evidence import schema
from tasks.mission import Action, Dataset, ModelEntry
from tasks.runtime.batching import run_batched
from tasks.stages._common import PROJECT_ROOT, RETRY, finish, model_spec, open_model_run


def _code_version() -> str:
    """Hash of the diagnostics and adapter sources: a code change invalidates cached diagnostics."""
    digest = hashlib.sha256(METRICS_VERSION.encode())
    for folder in ("diagnostics", "adapters", "data"):
        for path in sorted((PROJECT_ROOT / "tasks" / folder).rglob("*.py")):  # adapters/zoo/ included
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def diagnostics_cache_key(context, parameters) -> str:
    """Cache on (model id + weights revision, dataset hash, metric config, code version), never on a module."""
    spec: ModelSpec = parameters["spec"]
    revision = load_model(spec).revision
    parts = [spec.name, spec.adapter, spec.source, spec.arch or "", revision, load_dataset(parameters["dataset"]).content_hash,
             str(parameters["batch_size"]), _code_version()]
    if spec.dtype not in (None, "auto"):  # another precision, other values; the default keeps its old keys
        parts.append(f"dtype={spec.dtype}")
    return "diagnose-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


@task(name="diagnose-model", task_run_name="diagnose-model/{spec.name}", persist_result=True, cache_policy=CacheKeyFnPolicy(cache_key_fn=diagnostics_cache_key), **RETRY)
def diagnose_model(spec: ModelSpec, dataset: Dataset, batch_size: int = 32) -> DiagnosticResult:
    """On out of memory the batch is halved and retried (``run_batched``); the retries travel with the result."""
    model = load_model(spec)
    samples = load_dataset(dataset).samples
    done = [0]

    def one_batch(chunk):
        result = diagnose(model, chunk, batch_size=len(chunk))
        done[0] += len(chunk)
        progress.report("batch", f"{spec.name}: samples", done[0], len(samples))
        return result

    parts, events = run_batched(one_batch, samples, batch_size)
    return DiagnosticResult(spec.name, pd.concat([p.per_sample for p in parts], ignore_index=True),
                            pd.concat([p.per_layer for p in parts], ignore_index=True),
                            pd.concat([p.skipped for p in parts], ignore_index=True), parts[0].attention_maps,
                            [str(e) for e in events], map_spans=parts[0].map_spans)


@task(name="diagnostics", task_run_name=action_task_name, cache_policy=NO_CACHE)
def diagnostics_stage(cycle: Cycle, action: Action, entries: tuple[ModelEntry, ...], dispatch) -> Outcome:
    """Per-sample contributions and per-layer attention for every opened model, logged per model.

    ``dispatch(cycle, parent_run_id, entries) -> {model: model run id}`` runs
    each model as a ``diagnose-model`` flow run (``flows.diagnose.dispatch``:
    a subflow, or with ``cycle.fan_out`` a run of that deployment on whichever
    worker picks it up); the flow passes it in, so this stage never imports a
    flow. Either way the result comes back through the evidence store, so both
    paths report the same logged numbers.
    """
    ds = cycle.mission.dataset
    with action_run(cycle, action) as run:
        data = load_dataset(ds)
        samples = data.samples
        run.log(params={"dataset": ds.kind, "dataset_hash": data.content_hash, "metrics_version": METRICS_VERSION,
                        "fan_out": cycle.fan_out, "dataset_root": data.root or "built-in"},
                metrics={"dataset_samples_skipped": len(data.skipped)})
        run.table(data.skipped, "dataset_skipped.csv")
        finished = dispatch(cycle, run.run_id, entries)
        results: dict[str, DiagnosticResult] = {}
        for entry in entries:
            model_run = finished.get(entry.name)
            if model_run is None:
                continue
            results[entry.name] = DiagnosticResult(
                entry.name, evidence.read_table(model_run, "per_sample.csv"), evidence.read_table(model_run, "per_layer.csv"),
                evidence.read_table(model_run, "skipped_samples.csv"))
            plots_dir = cycle.report_dir / "results" / f"{entry.name}_attention_plots"
            if not plots_dir.exists():  # drawn on another machine
                evidence.fetch_artifacts(model_run, "plots", plots_dir.parent / "_fetched").rename(plots_dir)
        per_model = [c for c in evidence.read_run(run.run_id).children if c.tags.get(schema.STATUS) == COMPLETED]
        run.metrics({
            "models_diagnosed": len(results), "models_failed": len(entries) - len(results), "dataset_samples": len(samples),
            "samples_scored_min": min((float(r.m("samples_scored").value) for r in per_model), default=0),
            "plots_per_model_min": min((float(r.m("plots").value) for r in per_model), default=0),
        })
        outcome = Outcome(action.id, COMPLETED if results else BLOCKED, run.run_id, data=results,
                          reason="" if results else "no model was available to diagnose",
                          mitigation="" if results else "see the adapters action's blockers and the failed models' reasons")
    return finish(run, outcome)


def model_failed(cycle: Cycle, parent: str, entry: ModelEntry, cause: object) -> None:
    """Record a model whose diagnose-model run did not complete as Failed under the diagnostics action."""
    run = open_model_run(cycle, parent, entry.name)
    record(run, Outcome(entry.name, FAILED, run.run_id, reason=f"{type(cause).__name__}: {cause}",
                        mitigation="see the diagnose-model flow run's logs; a re-run reuses every finished model"))


def diagnose_and_log(cycle: Cycle, parent: str, entry: ModelEntry) -> str:
    """One model's diagnostics, logged as a child of the diagnostics action: the unit a worker runs."""
    ds = cycle.mission.dataset
    key = re.sub(r"[^a-z0-9-]", "-", f"diagnose-{entry.name}".lower())[:60]
    progress = create_progress_artifact(0.0, key=key, description=f"{entry.name}: diagnostics of cycle {cycle.cycle_id}")
    model_run = open_model_run(cycle, parent, entry.name)
    with tracked(model_run):
        # EAGER: the cached result is written the moment this model finishes, not when the enclosing
        # diagnostics task does; a cycle killed mid-way then keeps every model it finished.
        with transaction(commit_mode=CommitMode.EAGER):
            state = diagnose_model(model_spec(cycle, entry), ds, cycle.mission.runtime.batch_size, return_state=True)
        result = state.result()
        update_progress_artifact(progress, 80.0)
        _log_diagnostics(cycle, model_run, entry, result, cached=state.name == "Cached")
    record(model_run, Outcome(entry.name, COMPLETED, model_run.run_id))
    update_progress_artifact(progress, 100.0)
    return model_run.run_id


# Per-sample metric means logged for each model (NaN where a metric does not apply to the architecture).
MEAN_METRICS = ("modality_shapley_v", "ablation_visual_share", "mm_shap_v", "mm_shap_se", "attn_visual_share", "mcs_entropy",
                "rollout_visual_share", "relevance_visual_share", "attn_efficiency_ratio", "attn_other_share",
                "attn_sink_mass", "attn_visual_share_sink_aware", "mm_shap_signed_v")


def _log_diagnostics(cycle: Cycle, run: evidence.RunLog, entry: ModelEntry, result: DiagnosticResult, cached: bool) -> None:
    ps, pl = result.per_sample, result.per_layer
    layer_cols = [c for c in ("attn_visual_share", "entropy_visual", "entropy_text", "mcs_entropy", "rollout_visual_share") if c in pl]
    layer_means = pl.groupby("layer_index")[layer_cols].mean() if len(pl) else pd.DataFrame()
    metrics: dict[str, float] = {
        "samples_scored": int(ps["modality_shapley_v"].notna().sum()), "samples_skipped": len(result.skipped),
        "n_layers": result.n_layers,
    }
    metrics |= {schema.mean_key(c): ps[c].mean() for c in MEAN_METRICS if c in ps and ps[c].notna().any()}
    if {"attn_visual_share", "attn_text_share"} <= set(pl) and pl["attn_text_share"].notna().any():
        # the three attention buckets: image, text, and the rest (special tokens, registers, sinks)
        metrics |= {"attn_text_share_mean": pl["attn_text_share"].mean(),
                    "attn_other_share_mean": (1 - pl["attn_visual_share"] - pl["attn_text_share"]).clip(lower=0).mean()}
    for idx, row in layer_means.iterrows():
        metrics.update({schema.layer_key(idx, k): v for k, v in row.items() if pd.notna(v)})
    if len(pl) and pl["attn_visual_share"].notna().any():
        finding = imbalance_finding(pl, "attn_visual_share", cycle.mission.gates.imbalance_threshold)
        run.params({"layer_finding": str(finding)})
    folder = cycle.report_dir / "results" / f"{entry.name}_attention_plots"
    drawn = plots.draw_all(ps, pl, cycle.mission.gates.imbalance_threshold, entry.name, folder,
                           maps=getattr(result, "attention_maps", None), spans=getattr(result, "map_spans", None))
    metrics["plots"] = len(drawn)
    metrics["batch_retries"] = len(result.retries)
    run.log(metrics=metrics, params={"batch_retries": "; ".join(result.retries)} if result.retries else None,
            tags={schema.CACHED: str(cached).lower()})
    run.table(ps, "per_sample.csv")
    run.table(pl, "per_layer.csv")
    run.table(result.skipped, "skipped_samples.csv")
    for path in drawn:
        run.artifact(path, "plots")
