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
import time
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.tasks import exponential_backoff
from prefect.transactions import CommitMode, transaction

from agents import narrative
from agents.infra_monitor import environment_snapshot
from agents.quality_officer import assess, check_criteria, check_text, final_status
from tasks import environment, evidence, literature, paper, reporting, stats, stats_plots
from tasks.actions import (BLOCKED, COMPLETED, FAILED, Cycle, Outcome, action_run, blocked, open_child, record, tracked,
                           transient_only)
from tasks.adapters.base import ModelSpec, WeightsUnavailable
from tasks.adapters.registry import load_model
from tasks.data.synthetic import make_synthetic
from tasks.diagnostics import plots
from tasks.diagnostics.layers import imbalance_finding
from tasks.diagnostics.run import METRICS_VERSION, DiagnosticResult, diagnose
from tasks.batching import run_batched
from tasks.gates import evaluate_gates
from tasks.scores_table import analyze
from tasks.stats_layers import fit_layer_model
from tasks.data.datasets import load_dataset
from tasks.mission import Action, Dataset, ModelEntry
from tasks.reporting import make_env

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RETRY = dict(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_condition_fn=transient_only)


def model_spec(cycle: Cycle, entry: ModelEntry) -> ModelSpec:
    return ModelSpec(name=entry.name, adapter=entry.adapter, source=entry.source, arch=entry.arch,
                     allow_random_init=cycle.allow_random_init and not entry.calibration,
                     random_init_config=tuple(sorted(entry.random_init_config.items())),
                     device=cycle.mission.runtime.device, dtype=cycle.mission.runtime.dtype)


# ------------------------------------------------------------------ T2 environment

@task(name="environment-check", cache_policy=NO_CACHE, **RETRY)
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

@task(name="open-model", cache_policy=NO_CACHE, **RETRY)
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


@task(name="adapters", cache_policy=NO_CACHE)
def adapters_stage(cycle: Cycle, action: Action, entries: tuple[ModelEntry, ...]) -> Outcome:
    """Open every model of the action; the action completes if at least one model opens."""
    with action_run(cycle, action) as run:
        models = [_model_outcome(cycle, run.run_id, e, open_model(cycle, run.run_id, e, return_state=True)) for e in entries]
        loaded = [m for m in models if m.ok]
        traced = [evidence.read_run(m.run_id, with_children=False) for m in loaded]
        run.metrics({
            "models_requested": len(models), "models_loaded": len(loaded), "models_blocked": len(models) - len(loaded),
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


@task(name="diagnose-model", persist_result=True, cache_policy=CacheKeyFnPolicy(cache_key_fn=diagnostics_cache_key), **RETRY)
def diagnose_model(spec: ModelSpec, dataset: Dataset, batch_size: int = 32) -> DiagnosticResult:
    """On out of memory the batch is halved and retried (``run_batched``); the retries travel with the result."""
    model = load_model(spec)
    parts, events = run_batched(lambda chunk: diagnose(model, chunk, batch_size=len(chunk)), load_dataset(dataset).samples,
                                batch_size)
    return DiagnosticResult(spec.name, pd.concat([p.per_sample for p in parts], ignore_index=True),
                            pd.concat([p.per_layer for p in parts], ignore_index=True),
                            pd.concat([p.skipped for p in parts], ignore_index=True), parts[0].attention_maps,
                            [str(e) for e in events])


DIAGNOSE_DEPLOYMENT = "diagnose-model/diagnose-model"


@task(name="diagnostics", cache_policy=NO_CACHE)
def diagnostics_stage(cycle: Cycle, action: Action, entries: tuple[ModelEntry, ...]) -> Outcome:
    """Per-sample contributions and per-layer attention for every opened model, logged per model.

    Each model is a ``diagnose-model`` flow run: a subflow here, or with
    ``cycle.fan_out`` a run of that deployment on whichever worker (GPU
    machine) picks it up. Either way the result comes back through the
    evidence store, so both paths report the same logged numbers.
    """
    ds = cycle.mission.dataset
    with action_run(cycle, action) as run:
        data = load_dataset(ds)
        samples = data.samples
        run.params({"dataset": ds.kind, "dataset_hash": data.content_hash, "metrics_version": METRICS_VERSION,
                    "fan_out": cycle.fan_out, "dataset_root": data.root or "built-in"})
        run.metrics({"dataset_samples_skipped": len(data.skipped)})
        run.table(data.skipped, "dataset_skipped.csv")
        finished = _fan_out(cycle, run.run_id, entries) if cycle.fan_out else _in_process(cycle, run.run_id, entries)
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


def _in_process(cycle: Cycle, parent: str, entries: tuple[ModelEntry, ...]) -> dict[str, str]:
    from flows.diagnose import diagnose_model_flow  # the flow module imports this one

    finished = {}
    for entry in entries:
        state = diagnose_model_flow(cycle.to_params(), entry.name, parent, return_state=True)
        if state.is_completed():
            finished[entry.name] = state.result()
        else:
            _model_failed(cycle, parent, entry, state.result(raise_on_failure=False))
    return finished


def _fan_out(cycle: Cycle, parent: str, entries: tuple[ModelEntry, ...], poll_s: float = 2.0) -> dict[str, str]:
    """Submit every model as a deployment run at once, then wait: workers run them in parallel.

    The runs' results come back through the evidence store (the model's child
    run under ``parent``), not through Prefect result storage, which a worker
    on another machine does not share.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    pending = {e.name: run_deployment(DIAGNOSE_DEPLOYMENT, parameters={"cycle": cycle.to_params(), "model": e.name,
                                                                        "parent_run_id": parent},
                                      timeout=0, flow_run_name=f"diagnose {e.name} ({cycle.cycle_id})").id
               for e in entries}
    ended = {}
    with get_client(sync_client=True) as client:
        while pending:
            for name, run_id in list(pending.items()):
                flow_run = client.read_flow_run(run_id)
                if flow_run.state and flow_run.state.is_final():
                    ended[name] = flow_run
                    del pending[name]
            if pending:
                time.sleep(poll_s)
    finished = {}
    for entry in entries:
        flow_run = ended[entry.name]
        model_run = evidence.find_child(cycle.experiment_id, parent, {"fa.kind": "model", "fa.model": entry.name})
        if flow_run.state.is_completed() and model_run and model_run.tags.get("fa.status") == COMPLETED:
            finished[entry.name] = model_run.run_id
        else:
            _model_failed(cycle, parent, entry, RuntimeError(
                f"diagnose-model run {flow_run.name!r} ended {flow_run.state.name}: {flow_run.state.message or 'no message'}"))
    return finished


def _model_failed(cycle: Cycle, parent: str, entry: ModelEntry, cause: object) -> None:
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
                "rollout_visual_share", "relevance_visual_share", "attn_efficiency_ratio")


def _log_diagnostics(cycle: Cycle, run: evidence.RunLog, entry: ModelEntry, result: DiagnosticResult, cached: bool) -> None:
    ps, pl = result.per_sample, result.per_layer
    layer_cols = [c for c in ("attn_visual_share", "entropy_visual", "entropy_text", "mcs_entropy", "rollout_visual_share") if c in pl]
    layer_means = pl.groupby("layer_index")[layer_cols].mean() if len(pl) else pd.DataFrame()
    metrics: dict[str, float] = {
        "samples_scored": int(ps["modality_shapley_v"].notna().sum()), "samples_skipped": len(result.skipped),
        "n_layers": result.n_layers,
    }
    metrics |= {f"{c}_mean": ps[c].mean() for c in MEAN_METRICS if c in ps and ps[c].notna().any()}
    for idx, row in layer_means.iterrows():
        metrics.update({f"layer/{idx}/{k}": v for k, v in row.items() if pd.notna(v)})
    if len(pl) and pl["attn_visual_share"].notna().any():
        finding = imbalance_finding(pl, "attn_visual_share", cycle.mission.gates.imbalance_threshold)
        run.params({"layer_finding": str(finding)})
    folder = cycle.report_dir / "results" / f"{entry.name}_attention_plots"
    drawn = plots.draw_all(ps, pl, cycle.mission.gates.imbalance_threshold, entry.name, folder,
                           maps=getattr(result, "attention_maps", None))
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


@task(name="statistics", cache_policy=NO_CACHE)
def statistics_stage(cycle: Cycle, action: Action, results: dict[str, DiagnosticResult], random_init: tuple[str, ...] = ()) -> Outcome:
    """Per-model statistics, Holm-corrected collapse verdicts, pairwise comparisons, layer models, gates.

    RANDOM-INIT models are analysed but never counted by the gates.
    """
    gates = cycle.mission.gates
    metric = gates.metric
    with action_run(cycle, action) as run:
        table = scores_table(results)
        analysis = analyze(table, baseline=gates.baseline, margin=gates.equivalence_margin, alpha=gates.alpha,
                           threshold=gates.imbalance_threshold, n_resamples=9999, seed=0)
        run.table(table, "scores.csv")
        run.table(analysis.per_model_frame(), "per_model.csv")
        run.table(analysis.pairwise_frame(), "pairwise.csv")
        metrics: dict[str, float] = {"models_analysed": len(results), "bootstrap_resamples": 9999, "alpha": gates.alpha,
                                     "imbalance_threshold": gates.imbalance_threshold, "baseline": gates.baseline,
                                     "equivalence_margin": gates.equivalence_margin, "pairwise_family_size": analysis.family_size}
        params: dict[str, str] = {"correction": analysis.correction}
        on_gate = {r.model: r for r in analysis.per_model if r.metric == metric}
        counted = [n for n in results if n not in random_init and n in on_gate]
        # The collapse test is repeated once per model: its p-values are corrected across the counted models.
        family = stats.holm({n: on_gate[n].verdict.p for n in counted}, alpha=gates.alpha)
        p_holm = dict(zip(family.names, family.adjusted)) if counted else {}
        verdicts: dict[str, bool] = {}
        for name, r in on_gate.items():
            v = r.verdict
            metrics |= r.summary.as_dict(f"{name}/{metric}/") | v.as_dict(f"{name}/verdict/") | r.equivalence.as_dict(f"{name}/tost/")
            params |= r.summary.as_params(f"{name}/{metric}/") | v.as_params(f"{name}/verdict/") | {f"{name}/call": r.call.label}
            if name in p_holm:
                collapsed = bool(v.imbalance_exceeds and v.ci_beyond and p_holm[name] < gates.alpha)
                metrics |= {f"{name}/verdict/p_holm": p_holm[name], f"{name}/verdict/collapsed_holm": collapsed}
                verdicts[name] = collapsed
        for r in analysis.per_model:  # the other metrics: descriptive, never a verdict
            if r.metric != metric:
                metrics |= {f"{r.model}/{r.metric}/{k}": getattr(r.summary, k) for k in ("n", "mean", "ci_low", "ci_high")}
        for r in analysis.pairwise:
            if r.metric == metric:
                key = f"pairs/{r.model_a}_vs_{r.model_b}/"
                metrics |= r.comparison.as_dict(key) | {key + "p_holm": r.p_holm, key + "reject_holm": r.reject}
        metrics |= _layer_models(results, params)
        metrics |= _calibration_evidence(metric, params)
        result = evaluate_gates(verdicts, gates)
        metrics["gates/models_excluded_random_init"] = sum(1 for n in results if n in random_init)
        metrics |= {"gates/models_tested": result.models_tested, "gates/models_collapsed": result.models_collapsed,
                    "gates/min_models_tested": gates.min_models_tested, "gates/min_models_collapsed": gates.min_models_collapsed}
        run.metrics(metrics)
        run.params(params)
        run.tags({"fa.decision": result.decision, "fa.rule": result.rule,
                  "fa.collapsed": ",".join(result.collapsed) or "none", "fa.tested": ",".join(result.tested) or "none",
                  "fa.excluded": ",".join(n for n in results if n in random_init) or "none"})
        evidence.RunLog(cycle.run_id).tags({"fa.decision": result.decision})
        if results:
            folder = cycle.report_dir / "results"
            forest = stats_plots.forest_plot(analysis.per_model_frame().query("metric == @metric"), gates.imbalance_threshold,
                                             gates.baseline, folder / "forest_plot.png")
            run.artifact(forest, "plots")
        outcome = Outcome(action.id, COMPLETED, run.run_id, data=result)
    return _finish(run, outcome)


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

@task(name="literature", cache_policy=NO_CACHE, **RETRY)
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


@task(name="paper", cache_policy=NO_CACHE)
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
        filled = [facts["n_models_tested"], facts["p_value"], facts["cohens_d"], facts["collapsed_models"] or facts["decision"]]
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
    env.filters["tex"] = literature.tex_escape
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
        "p_value": ev.m(f"{strongest}/{metric}/t_p") if strongest else None,
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

@task(name="quality-review", cache_policy=NO_CACHE)
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
    """A logged value for the UI's table artifact (the statistics run named in its description is the evidence)."""
    return None if value is None else value.value


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


@task(name="reports", cache_policy=NO_CACHE)
def write_reports(cycle: Cycle) -> dict[str, object]:
    """Render every report from evidence, verify every citation, render again with the verdict."""
    env = make_env()
    view = reporting.cycle_view(cycle.mission, evidence.read_run(cycle.run_id))
    first_pass = assess(reporting.render_reports(env, view, cycle.report_dir))
    first, checked = first_pass.findings, first_pass.citations_checked
    quality = open_child(cycle, cycle.run_id, "quality-review", {"fa.kind": "quality"})
    verdict = "VERIFIED" if not first else "NOT VERIFIED"
    quality.metrics({"citations_checked": checked, "findings": len(first)})
    quality.tags({"fa.verdict": verdict})
    tree = evidence.read_run(cycle.run_id)
    view = reporting.cycle_view(cycle.mission, tree, quality=tree.child("fa.kind", "quality"))
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
    create_markdown_artifact(markdown=handoff.read_text(encoding="utf-8"), key=f"handoff-{cycle.mission.id}"[:60],
                             description=f"Week-1 handoff of cycle {cycle.cycle_id}")
    summary = cycle.report_dir / "summaries" / "cycle_summary.md"
    create_markdown_artifact(markdown=summary.read_text(encoding="utf-8"), key=f"cycle-summary-{cycle.mission.id}"[:60],
                             description=f"Cycle summary of cycle {cycle.cycle_id}")
    rows = [{"model": m.name + (" (RANDOM-INIT)" if m.random_init else ""), "architecture": m.family or "n/a",
             "status": m.status, "share": _plain(m.stats.get("mean")), "ci95_low": _plain(m.stats.get("ci_low")),
             "ci95_high": _plain(m.stats.get("ci_high")), "p": _plain(m.stats.get("t_p")), "cohen_d": _plain(m.stats.get("cohen_d")),
             "power": _plain(m.stats.get("power")), "call": m.call or "not tested"} for m in view["models"]]
    create_table_artifact(rows, key=f"comparison-{cycle.mission.id}"[:60],
                          description=f"Cross-architecture comparison of cycle {cycle.cycle_id}; evidence: statistics run "
                                      f"{view['stats_run'].run_id if view['stats_run'] else 'n/a'}")
    return {"handoff": str(handoff), "verdict": verdict, "findings": findings, "decision": view["decision"]}
