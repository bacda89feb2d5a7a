"""The Prefect tasks of the Week-1 stages: thin wrappers that log evidence around pure functions.

Each stage opens its action's MLflow run, computes with the pure modules
(``tasks.diagnostics``, ``tasks.stats``, ``tasks.literature``, ``tasks.paper``),
logs every number, and returns an ``Outcome`` (or a *Blocked* state).
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.tasks import exponential_backoff
from prefect.transactions import CommitMode, transaction

from agents import narrative
from agents.planner import NextPlan, plan_next
from agents.quality_officer import assess, check_criteria, check_text, final_status
from tasks import evidence, literature, paper, progress, reporting, stats_plots
from tasks.cited import footnotes_as_references
from tasks.actions import (BLOCKED, COMPLETED, FAILED, Cycle, Outcome, action_run, action_task_name, blocked,
                           open_child, record, tracked, transient_only)
from tasks.adapters.base import ModelSpec, WeightsUnavailable
from tasks.adapters.registry import load_model
from tasks.data.synthetic import make_synthetic
from tasks.diagnostics import plots
from tasks.diagnostics.baselines import ALL as BASELINE_SHARES
from tasks.diagnostics.layers import imbalance_finding
from tasks.diagnostics.run import METRICS_VERSION, DiagnosticResult, diagnose
from tasks import controls, metric_agreement
from tasks import gates as gates_mod
from tasks.reliance_plot import reliance_histogram
from tasks.runtime import environment
from tasks.runtime.batching import run_batched
from tasks.runtime.environment import environment_snapshot
from tasks.scores_table import analyze
from tasks.stats_layers import fit_layer_model
from tasks.data.datasets import load_dataset
from tasks.mission import Action, Dataset, Mission, ModelEntry
from tasks.rendering import make_env

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RETRY = dict(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_condition_fn=transient_only)


def model_spec(cycle: Cycle, entry: ModelEntry) -> ModelSpec:
    return ModelSpec(name=entry.name, adapter=entry.adapter, source=entry.source, arch=entry.arch,
                     allow_random_init=cycle.allow_random_init and not entry.calibration,
                     random_init_config=tuple(sorted(entry.random_init_config.items())),
                     trust_remote_code=entry.trust_remote_code,
                     device=cycle.mission.runtime.device, dtype=cycle.mission.runtime.dtype)


# ------------------------------------------------------------------ T2 environment

@task(name="environment-check", task_run_name=action_task_name, cache_policy=NO_CACHE, **RETRY)
def check_environment(cycle: Cycle, action: Action) -> Outcome:
    with action_run(cycle, action) as run:
        snap = environment_snapshot()  # redacted: no token or URI password reaches the evidence
        pkgs = environment.package_report(PROJECT_ROOT / "uv.lock")
        run.params({k: v for k, v in snap.items() if isinstance(v, str)} | {"drifted": "; ".join(pkgs["drifted"]) or "none"})
        pairs = _test_inference()
        run.metrics({k: v for k, v in snap.items() if not isinstance(v, str)} | {
            "packages_missing": len(pkgs["missing"]), "packages_locked": pkgs["locked"],
            "packages_drifted": len(pkgs["drifted"]), "drift_pct": pkgs["drift_pct"], "test_inference_pairs": pairs})
        outcome = Outcome(action.id, COMPLETED, run.run_id, data=snap)
        if pkgs["missing"]:
            outcome = Outcome(action.id, BLOCKED, run.run_id, reason="missing packages: " + ", ".join(pkgs["missing"]),
                              mitigation="run `uv sync` in the project folder")
    return _finish(run, outcome)


def _test_inference() -> int:
    """A real forward pass on sample pairs: torch, the data and an adapter work together."""
    samples = make_synthetic(4, seed=123)
    model = load_model(ModelSpec(name="zoo-balanced", adapter="zoo", source="balanced"))
    scores = model.score(model.prepare([s.image for s in samples], [s.caption for s in samples], [s.sample_id for s in samples]))
    return int(scores.isfinite().sum())


# ------------------------------------------------------------------ T1 / T6 adapters

@task(name="open-model", task_run_name="open-model/{entry.name}", cache_policy=NO_CACHE, **RETRY)
def open_model(cycle: Cycle, parent_run: str, entry: ModelEntry):
    """Load a model and trace two samples; Blocked when its weights are not on this machine."""
    run = open_child(cycle, parent_run, entry.name, {"fa.kind": "model", "fa.model": entry.name})
    spec = model_spec(cycle, entry)
    run.params({"adapter": entry.adapter, "source": entry.source, "arch": entry.arch or "none"})
    run.tags({"fa.calibration": str(entry.calibration).lower()})
    with tracked(run):
        try:
            model = load_model(spec)
        except WeightsUnavailable as exc:
            get_run_logger().warning("%s is Blocked: %s", entry.name, exc)
            run.tags({"fa.searched": "; ".join(exc.searched) or "nowhere", "fa.fetch": exc.fetch or "none"})
            return blocked(record(run, Outcome(entry.name, BLOCKED, run.run_id, reason=exc.reason,
                                               mitigation=f"{exc.mitigation} (looked in: {'; '.join(exc.searched)})")))
        samples = make_synthetic(2, seed=7)
        inputs = model.prepare([s.image for s in samples], [s.caption for s in samples], [s.sample_id for s in samples])
        layers = 0
        coverage = 0.0
        if "trace" in model.capabilities:
            summary = model.trace(inputs)
            layers = len(summary.layer_names)
            entropy_ok = (summary.entropy_visual.isfinite() | summary.entropy_text.isfinite()).all(dim=0)
            coverage = float(entropy_ok.float().mean()) if layers else 0.0
    run.tags({"fa.family": model.family, "fa.capabilities": ",".join(sorted(model.capabilities)),
              "fa.random_init": str(model.random_init).lower(), "fa.revision": model.revision})
    run.metrics({"layers_traced": layers, "trace_coverage": coverage, "random_init": int(model.random_init)})
    return record(run, Outcome(entry.name, COMPLETED, run.run_id, data={"family": model.family, "random_init": model.random_init}))


@task(name="adapters", task_run_name=action_task_name, cache_policy=NO_CACHE)
def adapters_stage(cycle: Cycle, action: Action, entries: tuple[ModelEntry, ...]) -> Outcome:
    """Open every model of the action; the action completes if at least one model opens."""
    with action_run(cycle, action) as run:
        models = []
        for i, e in enumerate(entries):
            progress.report("model", f"open {e.name}", i, len(entries))
            models.append(_model_outcome(cycle, run.run_id, e, open_model(cycle, run.run_id, e, return_state=True)))
        progress.report("model", "models opened", len(entries), len(entries))
        loaded = [m for m in models if m.ok]
        # Criteria about external models count external models only: calibration and RANDOM-INIT models are controls;
        # "traced in every layer" applies to the models that have the trace capability.
        calibration = {e.name for e in entries if e.calibration}
        external = [m for m in loaded if m.key not in calibration and not m.data["random_init"]]
        runs = {m.key: evidence.read_run(m.run_id, with_children=False) for m in external}
        traced = [r for r in runs.values() if "trace" in r.tags.get("fa.capabilities", "").split(",")]
        run.metrics({
            "models_requested": len(models), "models_loaded": len(loaded), "models_blocked": len(models) - len(loaded),
            "external_models_requested": sum(1 for e in entries if not e.calibration),
            "external_models_loaded": len(external), "external_models_traceable": len(traced),
            "layers_traced_min": min((float(r.m("layers_traced").value) for r in traced), default=0),
            "trace_coverage_min": min((float(r.m("trace_coverage").value) for r in traced), default=0),
        })
        outcome = Outcome(action.id, COMPLETED, run.run_id, data=models)
        if not loaded:
            outcome = Outcome(action.id, BLOCKED, run.run_id, data=models,
                              reason="no model could be opened: " + "; ".join(f"{m.key}: {m.reason}" for m in models),
                              mitigation="provide the weights (see each model's mitigation) or use the mission's alternatives")
    return _finish(run, outcome)


# ------------------------------------------------------------------ T4 diagnostics

def _code_version() -> str:
    """Hash of the diagnostics and adapter sources: a code change invalidates cached diagnostics."""
    digest = hashlib.sha256(METRICS_VERSION.encode())
    for folder in ("diagnostics", "adapters", "data"):
        for path in sorted((PROJECT_ROOT / "tasks" / folder).glob("*.py")):
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
        run.params({"dataset": ds.kind, "dataset_hash": data.content_hash, "metrics_version": METRICS_VERSION,
                    "fan_out": cycle.fan_out, "dataset_root": data.root or "built-in"})
        run.metrics({"dataset_samples_skipped": len(data.skipped)})
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
        per_model = [c for c in evidence.read_run(run.run_id).children if c.tags.get("fa.status") == COMPLETED]
        run.metrics({
            "models_diagnosed": len(results), "models_failed": len(entries) - len(results), "dataset_samples": len(samples),
            "samples_scored_min": min((float(r.m("samples_scored").value) for r in per_model), default=0),
            "plots_per_model_min": min((float(r.m("plots").value) for r in per_model), default=0),
        })
        outcome = Outcome(action.id, COMPLETED if results else BLOCKED, run.run_id, data=results,
                          reason="" if results else "no model was available to diagnose",
                          mitigation="" if results else "see the adapters action's blockers and the failed models' reasons")
    return _finish(run, outcome)


def model_failed(cycle: Cycle, parent: str, entry: ModelEntry, cause: object) -> None:
    """Record a model whose diagnose-model run did not complete as Failed under the diagnostics action."""
    run = open_child(cycle, parent, entry.name, {"fa.kind": "model", "fa.model": entry.name})
    record(run, Outcome(entry.name, FAILED, run.run_id, reason=f"{type(cause).__name__}: {cause}",
                        mitigation="see the diagnose-model flow run's logs; a re-run reuses every finished model"))


def diagnose_and_log(cycle: Cycle, parent: str, entry: ModelEntry) -> str:
    """One model's diagnostics, logged as a child of the diagnostics action: the unit a worker runs."""
    ds = cycle.mission.dataset
    key = re.sub(r"[^a-z0-9-]", "-", f"diagnose-{entry.name}".lower())[:60]
    progress = create_progress_artifact(0.0, key=key, description=f"{entry.name}: diagnostics of cycle {cycle.cycle_id}")
    model_run = open_child(cycle, parent, entry.name, {"fa.kind": "model", "fa.model": entry.name})
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
    metrics |= {f"{c}_mean": ps[c].mean() for c in MEAN_METRICS if c in ps and ps[c].notna().any()}
    if {"attn_visual_share", "attn_text_share"} <= set(pl) and pl["attn_text_share"].notna().any():
        # the three attention buckets: image, text, and the rest (special tokens, registers, sinks)
        metrics |= {"attn_text_share_mean": pl["attn_text_share"].mean(),
                    "attn_other_share_mean": (1 - pl["attn_visual_share"] - pl["attn_text_share"]).clip(lower=0).mean()}
    for idx, row in layer_means.iterrows():
        metrics.update({f"layer/{idx}/{k}": v for k, v in row.items() if pd.notna(v)})
    if len(pl) and pl["attn_visual_share"].notna().any():
        finding = imbalance_finding(pl, "attn_visual_share", cycle.mission.gates.imbalance_threshold)
        run.params({"layer_finding": str(finding)})
    folder = cycle.report_dir / "results" / f"{entry.name}_attention_plots"
    drawn = plots.draw_all(ps, pl, cycle.mission.gates.imbalance_threshold, entry.name, folder,
                           maps=getattr(result, "attention_maps", None), spans=getattr(result, "map_spans", None))
    metrics["plots"] = len(drawn)
    metrics["batch_retries"] = len(result.retries)
    if result.retries:
        run.params({"batch_retries": "; ".join(result.retries)})
    run.metrics(metrics)
    run.tags({"fa.cached": str(cached).lower()})
    run.table(ps, "per_sample.csv")
    run.table(pl, "per_layer.csv")
    run.table(result.skipped, "skipped_samples.csv")
    for path in drawn:
        run.artifact(path, "plots")


# ------------------------------------------------------------------ T3 statistics

# Per-sample metrics the statistics summarise; verdicts use only the mission's gate metric.
ANALYSED_METRICS = ("modality_shapley_v", "ablation_visual_share", "mm_shap_v", "attn_visual_share", "rollout_visual_share",
                    "mcs_entropy")


def scores_table(results: dict[str, DiagnosticResult]) -> pd.DataFrame:
    """Long table (model, sample_id, metric, value): the input of ``analyze``, also exported for ``stats summarize``."""
    frames = []
    for name, result in results.items():
        ps = result.per_sample
        present = [m for m in ANALYSED_METRICS if m in ps and ps[m].notna().any()]
        long = ps.melt(id_vars="sample_id", value_vars=present, var_name="metric", value_name="value").dropna(subset=["value"])
        frames.append(long.assign(model=name))
    return pd.concat(frames, ignore_index=True)[["model", "sample_id", "metric", "value"]] if frames else pd.DataFrame(
        columns=["model", "sample_id", "metric", "value"])


CALLS = ("collapsed", "per-sample dominance", "balanced", "imbalanced", "not testable", "not shown to differ")


def call_key(label: str) -> str:
    """The metric key of a call: ``per-sample dominance`` → ``per_sample_dominance``."""
    return label.replace("-", "_").replace(" ", "_")


def roles(mission, names, random_init: tuple[str, ...] = ()) -> dict[str, str]:
    """Each analysed model's role: an external subject, or a control (calibration zoo, RANDOM-INIT)."""
    calibration = {m.name for m in mission.models + mission.alternatives if m.calibration}
    return {n: gates_mod.CALIBRATION if n in calibration else gates_mod.RANDOM_INIT if n in random_init
            else gates_mod.SUBJECT for n in names}


@task(name="statistics", task_run_name=action_task_name, cache_policy=NO_CACHE)
def statistics_stage(cycle: Cycle, action: Action, results: dict[str, DiagnosticResult], random_init: tuple[str, ...] = ()) -> Outcome:
    """Per-model statistics and per-sample reliance, Holm-corrected collapse verdicts, controls, pairwise
    comparisons, layer models, baseline robustness and the one gate decision (``tasks.gates.decide``).

    Only external subjects enter the Holm family and the gates; calibration and RANDOM-INIT models are controls.
    """
    gates = cycle.mission.gates
    metric = gates.metric
    with action_run(cycle, action) as run:
        table = scores_table(results)
        role = roles(cycle.mission, results, random_init)
        subjects = [n for n in results if role[n] == gates_mod.SUBJECT]
        analysis = analyze(table, baseline=gates.baseline, margin=gates.equivalence_margin, alpha=gates.alpha,
                           threshold=gates.imbalance_threshold, n_resamples=9999, seed=0, subjects=subjects)
        run.table(table, "scores.csv")
        run.table(analysis.per_model_frame(), "per_model.csv")
        run.table(analysis.pairwise_frame(), "pairwise.csv")
        metrics: dict[str, float] = {"models_analysed": len(results), "bootstrap_resamples": 9999, "alpha": gates.alpha,
                                     "imbalance_threshold": gates.imbalance_threshold, "baseline": gates.baseline,
                                     "equivalence_margin": gates.equivalence_margin, "pairwise_family_size": analysis.family_size,
                                     "confidence": 1 - gates.alpha, "collapse_family_size": len(subjects)}
        params: dict[str, str] = {"correction": analysis.correction}
        entries = {m.name: m for m in cycle.mission.models + cycle.mission.alternatives}
        verdicts: list[gates_mod.ModelVerdict] = []
        for r in analysis.per_model:
            name = r.model
            if r.metric != metric:  # the other metrics: descriptive, never a verdict
                metrics |= {f"{name}/{r.metric}/{k}": getattr(r.summary, k) for k in ("n", "mean", "ci_low", "ci_high")}
                continue
            v, entry = r.verdict, entries.get(name)
            metrics |= (r.summary.as_dict(f"{name}/{metric}/") | v.as_dict(f"{name}/verdict/")
                        | r.equivalence.as_dict(f"{name}/tost/") | r.reliance.as_dict(f"{name}/reliance/"))
            params |= (r.summary.as_params(f"{name}/{metric}/") | v.as_params(f"{name}/verdict/")
                       | r.reliance.as_params(f"{name}/reliance/")
                       | {f"{name}/call": r.call.label, f"{name}/call_reason": r.call.reason, f"{name}/direction": r.call.direction,
                          f"{name}/role": role[name], f"{name}/architecture": entry.adapter if entry else "unknown"})
            # each verdict word a report shows is a logged number it can cite: 1 for the call made, 0 for the others
            metrics |= {f"{name}/call/{call_key(label)}": int(r.call.label == label) for label in CALLS}
            passed = None
            if role[name] == gates_mod.CALIBRATION:
                planted = controls.planted_direction(entry.adapter, entry.source) if entry else None
                measured = controls.measured_direction(v.collapsed, v.dominant, r.call.label, r.call.direction)
                passed = controls.control_passed(planted, measured)
                params |= {f"{name}/control/planted": planted or "unknown", f"{name}/control/measured": measured}
                if passed is not None:
                    metrics[f"{name}/control/passed"] = passed
            verdicts.append(gates_mod.ModelVerdict(name, role[name], v.collapsed, entry.adapter if entry else name, passed))
        for r in analysis.pairwise:
            if r.metric == metric:
                key = f"pairs/{r.model_a}_vs_{r.model_b}/"
                metrics |= r.comparison.as_dict(key) | {key + "p_holm": r.p_holm, key + "reject_holm": r.reject}
        metrics |= _layer_models(results, params)
        metrics |= _calibration_evidence(metric, params)
        metrics |= _baseline_robustness(results, subjects, gates, params)
        for name, res in results.items():  # MM-SHAP beside the verdict metric
            ps = res.per_sample
            if "mm_shap_signed_v" in ps and ps["mm_shap_signed_v"].notna().any() and metric in ps:
                agreement = metric_agreement.compare(ps[metric], ps["mm_shap_v"], ps["mm_shap_sum_image"],
                                                     ps["mm_shap_sum_text"], ps["mm_shap_signed_v"], gates.imbalance_threshold)
                metrics |= agreement.as_dict(f"{name}/signed/")
                params |= agreement.as_params(f"{name}/signed/")
        external = [m.name for m in cycle.mission.models if not m.calibration]
        blocked = [n for n in external if n not in results]
        result = gates_mod.decide(verdicts, gates, blocked)
        metrics["gates/models_excluded_random_init"] = sum(1 for n in results if role[n] == gates_mod.RANDOM_INIT)
        metrics |= {"gates/models_tested": result.models_tested, "gates/models_collapsed": result.models_collapsed,
                    "gates/min_models_tested": gates.min_models_tested, "gates/min_models_collapsed": gates.min_models_collapsed,
                    "gates/models_blocked": len(result.blocked), "gates/controls": len(result.controls),
                    "gates/controls_failed": len(result.controls_failed),
                    "gates/architectures_counted": result.architectures_counted,
                    "gates/trustworthy": result.trustworthy}
        run.metrics(metrics)
        run.params(params)
        run.tags({"fa.decision": result.decision, "fa.rule": result.rule,
                  "fa.collapsed": ",".join(result.collapsed) or "none", "fa.tested": ",".join(result.tested) or "none",
                  "fa.excluded": ",".join(result.controls) or "none", "fa.blocked": ",".join(result.blocked) or "none",
                  "fa.controls_failed": ",".join(result.controls_failed) or "none",
                  "fa.trustworthy": str(result.trustworthy).lower()})
        evidence.RunLog(cycle.run_id).tags({"fa.decision": result.decision})
        if results:
            folder = cycle.report_dir / "results"
            forest = stats_plots.forest_plot(analysis.per_model_frame().query("metric == @metric"), gates.imbalance_threshold,
                                             gates.baseline, folder / "forest_plot.png")
            run.artifact(forest, "plots")
            reliance_plot = reliance_histogram(table.query("metric == @metric"), gates.imbalance_threshold,
                                                           folder / "per_sample_reliance.png")
            run.artifact(reliance_plot, "plots")
        outcome = Outcome(action.id, COMPLETED, run.run_id, data=result)
    return _finish(run, outcome)


#: The masking baselines a verdict must survive (tasks.diagnostics.baselines), by their short name in the evidence.
BASELINES = dict(zip(("default", "image_blur", "image_other", "text_empty", "text_other"), BASELINE_SHARES))


def _baseline_robustness(results: dict[str, DiagnosticResult], subjects: list[str], gates, params: dict[str, str]) -> dict:
    """The collapse verdict under every masking baseline: "robust" only when it is the same under all of them."""
    frames = []
    for name, res in results.items():
        present = [c for c in BASELINE_SHARES if c in res.per_sample and res.per_sample[c].notna().any()]
        frames.append(res.per_sample.melt(id_vars="sample_id", value_vars=present, var_name="metric")
                      .dropna(subset=["value"]).assign(model=name))
    if not frames or not sum(len(f) for f in frames):
        return {}
    table = pd.concat(frames, ignore_index=True)[["model", "sample_id", "metric", "value"]]
    analysis = analyze(table, baseline=gates.baseline, margin=gates.equivalence_margin, alpha=gates.alpha,
                       threshold=gates.imbalance_threshold, n_resamples=9999, seed=0, subjects=subjects, pairwise=False)
    found = {(r.model, r.metric): r for r in analysis.per_model}
    out: dict[str, float] = {}
    for name in results:
        outcomes, means = {}, []
        for short, column in BASELINES.items():
            r = found.get((name, column))
            if r is None:
                continue
            outcome = f"collapsed toward {r.verdict.dominant}" if r.verdict.collapsed else "not collapsed"
            outcomes[short] = outcome
            means.append(r.summary.mean)
            out |= {f"{name}/robust/{short}/mean": r.summary.mean, f"{name}/robust/{short}/collapsed": r.verdict.collapsed}
            params[f"{name}/robust/{short}/outcome"] = outcome
        if outcomes:
            out |= {f"{name}/robust/baselines": len(outcomes), f"{name}/robust/spread": max(means) - min(means),
                    f"{name}/robust/robust": len(outcomes) == len(BASELINES) and len(set(outcomes.values())) == 1}
    return out


CALIBRATION_EXPERIMENT = "fusionaudit-calibration"


def _calibration_evidence(metric: str, params: dict[str, str]) -> dict[str, float]:
    """Whether the latest ``fusionaudit calibrate`` run showed that the verdict metric separates the zoo."""
    client = evidence.client()
    exp = client.get_experiment_by_name(CALIBRATION_EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=50,
                              order_by=["attributes.start_time DESC"]) if exp else []
    latest = next((r for r in runs if f"scores/{metric}/separates" in r.data.metrics), None)
    if latest is None:
        params["calibration_run"] = "none"
        return {}
    params["calibration_run"] = latest.info.run_id
    return {f"calibration/{metric}/{k}": latest.data.metrics[f"scores/{metric}/{k}"]
            for k in ("separates", "sensitivity", "specificity") if f"scores/{metric}/{k}" in latest.data.metrics}


def _layer_models(results: dict[str, DiagnosticResult], params: dict[str, str]) -> dict[str, float]:
    """Per model, a mixed-effects model of the per-layer attention share (samples as groups), convergence reported."""
    out: dict[str, float] = {}
    for name, result in results.items():
        pl = result.per_layer
        if not len(pl) or "attn_visual_share" not in pl or pl["attn_visual_share"].notna().sum() < 8:
            continue
        long = pl.rename(columns={"attn_visual_share": "value"}).assign(model=name)[["model", "sample_id", "layer_index", "value"]].dropna()
        fit = fit_layer_model(long)
        out |= {f"{name}/layers/converged": bool(fit.converged), f"{name}/layers/reliable": bool(fit.reliable)}
        params[f"{name}/layers/warnings"] = "; ".join(fit.warnings) or "none"
    return out


# ------------------------------------------------------------------ T5 literature, T7 paper

@task(name="literature", task_run_name=action_task_name, cache_policy=NO_CACHE, **RETRY)
def literature_stage(cycle: Cycle, action: Action, bib_files: tuple[str, ...] = ()) -> Outcome:
    with action_run(cycle, action) as run:
        paths = [PROJECT_ROOT / "literature" / "references.bib", *map(Path, bib_files)]
        library = literature.load_library(paths)
        tex, md = literature.render_related_work(library)
        out = cycle.report_dir / "paper"
        out.mkdir(parents=True, exist_ok=True)
        (out / "related_work.tex").write_text(tex, encoding="utf-8")
        (out / "related_work.md").write_text(md, encoding="utf-8")
        run.artifact(out / "related_work.tex", "paper")
        run.artifact(out / "related_work.md", "paper")
        run.metrics({"bib_entries": len(library), "unresolved_citations": 0})
        outcome = Outcome(action.id, COMPLETED, run.run_id)
    return _finish(run, outcome)


@task(name="paper", task_run_name=action_task_name, cache_policy=NO_CACHE)
def paper_stage(cycle: Cycle, action: Action, stats_run: str) -> Outcome:
    """The abstract's placeholders filled from the statistics run as read back from MLflow."""
    with action_run(cycle, action) as run:
        ev = evidence.read_run(stats_run, with_children=False)
        facts = abstract_facts(ev, cycle.mission.gates.metric)
        tex, md = paper.render_abstract(None, facts)
        out = cycle.report_dir / "paper"
        out.mkdir(parents=True, exist_ok=True)
        (out / "abstract.tex").write_text(tex, encoding="utf-8")
        (out / "abstract.md").write_text(md, encoding="utf-8")
        findings = _paper_sections(cycle, out)
        findings += check_text(md)[0]
        for path in sorted(out.glob("*")):
            if path.name.split(".")[0] in ("abstract", "method", "results"):
                run.artifact(path, "paper")
        run.metrics({"latex_compiled": _compile_latex(out)} if shutil.which("pdflatex") else {})
        # p and d belong in the abstract only when a counted model collapsed; otherwise the abstract states that none
        # did (the evidence is the logged count), so those two placeholders are resolved without a number
        collapsed = bool(facts["strongest_model"])
        filled = [facts["n_models_tested"], facts["p_value"] if collapsed else "none collapsed",
                  facts["cohens_d"] if collapsed else "none collapsed", facts["collapsed_models"] or facts["decision"]]
        run.metrics({"placeholders_filled": sum(1 for v in filled if v is not None), "uncited_numbers": len(findings)})
        outcome = Outcome(action.id, COMPLETED, run.run_id)
    return _finish(run, outcome)


def _paper_sections(cycle: Cycle, out: Path) -> list:
    """Method (the formulas of the metrics this cycle used) and results (table, forest plot), Markdown and LaTeX,
    from the cycle's evidence; returns the evidence check's findings on the Markdown twins."""
    view = reporting.cycle_view(cycle.mission, evidence.read_run(cycle.run_id))
    if view["stats_run"] is None:
        return []
    used = {m for m in ANALYSED_METRICS if any(f"{mv.name}/{m}/mean" in view["stats_run"].metrics for mv in view["models"])}
    used.add(cycle.mission.gates.metric)
    env = paper.with_paper_filters(make_env())
    context = {**view, "s": view["stats_run"], "metrics_used": used, "fa_providecommand": paper.FA_PROVIDECOMMAND}
    findings = []
    for section in ("method", "results"):
        for ext in ("md", "tex"):
            (out / f"{section}.{ext}").write_text(env.get_template(f"paper/{section}.{ext}.j2").render(**context), encoding="utf-8")
        findings += check_text((out / f"{section}.md").read_text(encoding="utf-8"))[0]
    return findings


def _compile_latex(out: Path) -> int:
    """Where a TeX engine is installed: every section must compile inside a minimal document (1) or not (0)."""
    body = "\\documentclass{article}\\usepackage{booktabs,graphicx,amsmath}\\begin{document}" + "".join(
        f"\\input{{{name}}}" for name in ("abstract", "method", "results")) + "\\end{document}"
    (out / "draft.tex").write_text(body, encoding="utf-8")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "draft.tex"], cwd=out,
                          capture_output=True, timeout=120)
    return int(done.returncode == 0)


def abstract_facts(ev: evidence.RunEvidence, metric: str) -> dict:
    """The abstract's placeholders (models, p-value, Cohen's d, key finding) from the statistics run."""
    names = lambda tag: [n for n in ev.tags.get(tag, "none").split(",") if n != "none"]  # noqa: E731
    collapsed = names("fa.collapsed")
    strongest = max(collapsed, key=lambda n: float(ev.m(f"{n}/verdict/imbalance").value)) if collapsed else None
    return {
        "decision": ev.tags.get("fa.decision", "NEED_MORE_DATA"),
        "n_models_tested": ev.m("gates/models_tested"), "n_models_collapsed": ev.m("gates/models_collapsed"),
        "models_tested": names("fa.tested"),
        "collapsed_models": [{"name": n, "dominant": ev.params[f"{n}/verdict/dominant"], "imbalance": ev.m(f"{n}/verdict/imbalance")}
                             for n in collapsed],
        "strongest_model": strongest,
        "n_architectures": ev.m("gates/architectures_counted"), "min_architectures": ev.m("gates/min_models_tested"),
        "p_value": ev.m(f"{strongest}/verdict/p_holm") if strongest else None,  # the deciding test, Holm-corrected
        "cohens_d": ev.m(f"{strongest}/{metric}/cohen_d") if strongest else None,
    }


# ------------------------------------------------------------------ helpers

def _model_outcome(cycle: Cycle, parent: str, entry: ModelEntry, state) -> Outcome:
    """One model that cannot be opened (a bad tag, a corrupt checkpoint) fails alone; the others go on."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, Outcome):
        return result
    run = open_child(cycle, parent, entry.name, {"fa.kind": "model", "fa.model": entry.name})
    return record(run, Outcome(entry.name, FAILED, run.run_id, reason=f"{type(result).__name__}: {result}",
                               mitigation=f"fix model {entry.name!r} in the mission (adapter, arch, source)"))


def _finish(run: evidence.RunLog, outcome: Outcome):
    record(run, outcome)
    return blocked(outcome) if outcome.status == BLOCKED else outcome


# ------------------------------------------------------------------ quality review and reports

@task(name="quality-review", task_run_name="quality review", cache_policy=NO_CACHE)
def quality_review(cycle: Cycle) -> dict[str, int]:
    """Acceptance criteria of every action against its evidence; final statuses counted on the cycle run."""
    tree = evidence.read_run(cycle.run_id)
    checks = check_criteria(cycle.mission, tree)
    run = open_child(cycle, cycle.run_id, "quality-review", {"fa.kind": "quality"})
    counts = {COMPLETED: 0, BLOCKED: 0, FAILED: 0}
    for action in cycle.mission.actions:
        action_ev = tree.child("fa.action_id", action.id)
        stage_status = action_ev.tags.get("fa.status", FAILED) if action_ev else FAILED
        status = final_status(stage_status, [c for c in checks if c.action_id == action.id])
        counts[status] = counts.get(status, 0) + 1
        if action_ev:
            evidence.RunLog(action_ev.run_id).tags({"fa.final_status": status})
    run.metrics({"criteria_checked": len(checks), "criteria_passed": sum(c.passed for c in checks),
                 "criteria_failed": sum(not c.passed for c in checks)})
    evidence.RunLog(cycle.run_id).metrics({"actions_completed": counts[COMPLETED], "actions_blocked": counts[BLOCKED],
                                           "actions_failed": counts[FAILED], "actions_total": len(cycle.mission.actions)})
    return counts


def _plain(value) -> float | None:
    """A logged value, to three significant digits, for the UI's table artifact and the terminal's final table
    (the statistics run named in the artifact's description holds the full value)."""
    if value is None or not isinstance(value.value, (int, float)):
        return None if value is None else value.value
    return float(f"{value.value:.3g}")


def _narrative(view: dict, quality: evidence.RunLog) -> narrative.NarrativeResult | None:
    """Optional prose from a language model (off unless configured); kept only if its numbers check out."""
    if not narrative.enabled() or view["stats_run"] is None:
        return None
    s = view["stats_run"]
    facts = [c for c in (s.m("gates/models_tested"), s.m("gates/models_collapsed"), s.m("imbalance_threshold")) if c]
    result = narrative.write_paragraph(facts, f"In two sentences, state the cycle's decision ({view['decision']}) "
                                              "and how many models were tested and collapsed.")
    quality.tags({"fa.narrative": "accepted" if result.accepted else f"rejected: {result.rejected_reason}"})
    return result


def _next_plan(mission: Mission, cycle: evidence.RunEvidence) -> NextPlan | None:
    """What the planner will do next cycle, from this cycle's evidence (None if the plan cannot be made)."""
    try:
        return plan_next(mission, cycle)
    except ValueError:
        return None


def _chartable_statistics(view: dict) -> None:
    """Each model's statistics copied onto its own diagnostics run (``stats/<metric>/<key>``), so MLflow's run
    comparison charts them across models; the statistics run stays the evidence the reports cite."""
    s = view["stats_run"]
    if s is None:
        return
    for model in view["models"]:
        if model.diag is None:
            continue
        prefix = f"{model.name}/"
        values = {"stats/" + k.removeprefix(prefix): c.value for k, c in s.metrics.items()
                  if k.startswith(prefix) and isinstance(c.value, (int, float))}
        if values:
            evidence.RunLog(model.diag.run_id).metrics(values)
            evidence.RunLog(model.diag.run_id).tags({"fa.call": model.call or "n/a",
                                                     "fa.verdict": "collapse" if model.collapsed else "no collapse shown"})


@task(name="reports", task_run_name="reports and handoff", cache_policy=NO_CACHE)
def write_reports(cycle: Cycle) -> dict[str, object]:
    """Render every report from evidence, verify every citation, render again with the verdict."""
    env = make_env()
    # The first screen's strength, blocker and next action: derived from the evidence, logged, then cited.
    first = evidence.read_run(cycle.run_id)
    if "fa.decision" not in first.tags:  # no statistics ran: the gates' answer without evidence, logged so it is cited
        evidence.RunLog(cycle.run_id).tags({"fa.decision": "NEED_MORE_DATA", "fa.rule": "the statistics did not run"})
        first = evidence.read_run(cycle.run_id)
    next_plan = _next_plan(cycle.mission, first)
    before = reporting.cycle_view(cycle.mission, first, next_plan=next_plan)
    head = reporting.headline_of(before)
    _chartable_statistics(before)
    evidence.RunLog(cycle.run_id).metrics(head.metrics())
    evidence.RunLog(cycle.run_id).tags(head.tags())
    tree = evidence.read_run(cycle.run_id)
    view = reporting.cycle_view(cycle.mission, tree, next_plan=next_plan)
    first_pass = assess(reporting.render_reports(env, view, cycle.report_dir))
    first, checked = first_pass.findings, first_pass.citations_checked
    quality = open_child(cycle, cycle.run_id, "quality-review", {"fa.kind": "quality"})
    verdict = "VERIFIED" if not first else "NOT VERIFIED"
    quality.metrics({"citations_checked": checked, "findings": len(first)})
    quality.tags({"fa.verdict": verdict})
    tree = evidence.read_run(cycle.run_id)
    view = reporting.cycle_view(cycle.mission, tree, quality=tree.child("fa.kind", "quality"),
                                next_plan=_next_plan(cycle.mission, tree))
    view["narrative"] = _narrative(view, quality)
    paths = reporting.render_reports(env, view, cycle.report_dir)
    final = assess(paths)
    findings, checked_final = final.findings, final.citations_checked
    if findings:
        verdict = "NOT VERIFIED"
        quality.tags({"fa.verdict": verdict})
        (cycle.report_dir / "handoff" / "verification_findings.txt").write_text("\n".join(findings) + "\n", encoding="utf-8")
    quality.metrics({"citations_checked_final": checked_final, "findings_final": len(findings)})
    for path in paths:
        evidence.RunLog(cycle.run_id).artifact(path, str(path.parent.relative_to(cycle.report_dir)))
    quality.finish()
    handoff = cycle.report_dir / "handoff" / "execution_progress_update.md"
    text = handoff.read_text(encoding="utf-8")
    # the Prefect UI renders no footnotes: its artifacts list each reference's run and key at the end instead
    create_markdown_artifact(markdown=footnotes_as_references(reporting.first_screen(text)), key=f"summary-{cycle.mission.id}"[:60],
                             description=f"Decision and what blocks a stronger answer, cycle {cycle.cycle_id} "
                                         f"(full handoff: artifact handoff-{cycle.mission.id})")
    create_markdown_artifact(markdown=footnotes_as_references(reporting.inline_images(text, handoff.parent)),
                             key=f"handoff-{cycle.mission.id}"[:60],
                             description=f"Week-1 handoff of cycle {cycle.cycle_id}")
    summary = cycle.report_dir / "summaries" / "cycle_summary.md"
    create_markdown_artifact(markdown=footnotes_as_references(summary.read_text(encoding="utf-8")),
                             key=f"cycle-summary-{cycle.mission.id}"[:60],
                             description=f"Cycle summary of cycle {cycle.cycle_id}")
    rows = [{"model": m.name + (" (RANDOM-INIT)" if m.random_init else ""), "architecture": m.family or "n/a",
             "status": m.status, "share": _plain(m.stats.get("mean")), "ci95_low": _plain(m.stats.get("ci_low")),
             "ci95_high": _plain(m.stats.get("ci_high")), "p": _plain(m.stats.get("t_p")), "cohen_d": _plain(m.stats.get("cohen_d")),
             "power": _plain(m.stats.get("power")), "call": m.call or "not tested"} for m in view["models"]]
    create_table_artifact(rows, key=f"comparison-{cycle.mission.id}"[:60],
                          description=f"Cross-architecture comparison of cycle {cycle.cycle_id}; evidence: statistics run "
                                      f"{view['stats_run'].run_id if view['stats_run'] else 'n/a'}")
    return {"handoff": str(handoff), "verdict": verdict, "findings": findings, "decision": view["decision"], "models": rows}
