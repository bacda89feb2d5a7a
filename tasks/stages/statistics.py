"""T3: per-model statistics, Holm-corrected collapse verdicts, controls, comparisons and the one gate decision."""
from __future__ import annotations

from functools import partial

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import evidence
from tasks.actions import COMPLETED, Cycle, Outcome, action_run, action_task_name
from tasks.diagnostics.baselines import ALL as BASELINE_SHARES
from tasks.diagnostics.run import DiagnosticResult
from tasks.evidence import schema
from tasks.mission import Action
from tasks.stages._common import finish
from tasks.stats import controls, figures, metric_agreement
from tasks.stats import gates as gates_mod
from tasks.stats.analysis import analyze
from tasks.stats.figures import reliance_histogram
from tasks.stats.layer_models import fit_layer_model


# Per-sample metrics the statistics summarise; verdicts use only the mission's gate metric.
ANALYSED_METRICS = ("modality_shapley_v", "ablation_visual_share", "mm_shap_v", "attn_visual_share", "rollout_visual_share",
                    "mcs_entropy")


def analysed_scores(results: dict[str, DiagnosticResult]) -> pd.DataFrame:
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


def roles(mission, names, random_init: tuple[str, ...] = ()) -> dict[str, str]:
    """Each analysed model's role: an external subject, or a control (calibration zoo, RANDOM-INIT)."""
    calibration = {m.name for m in mission.models + mission.alternatives if m.calibration}
    return {n: gates_mod.CALIBRATION if n in calibration else gates_mod.RANDOM_INIT if n in random_init
            else gates_mod.SUBJECT for n in names}


@task(name="statistics", task_run_name=action_task_name, cache_policy=NO_CACHE)
def statistics_stage(cycle: Cycle, action: Action, results: dict[str, DiagnosticResult], random_init: tuple[str, ...] = ()) -> Outcome:
    """Per-model statistics and per-sample reliance, Holm-corrected collapse verdicts, controls, pairwise
    comparisons, layer models, baseline robustness and the one gate decision (``tasks.stats.gates.decide``).

    Only external subjects enter the Holm family and the gates; calibration and RANDOM-INIT models are controls.
    """
    gates = cycle.mission.gates
    metric = gates.metric
    with action_run(cycle, action) as run:
        table = analysed_scores(results)
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
                metrics |= {schema.model_key(name, r.metric, k): getattr(r.summary, k) for k in ("n", "mean", "ci_low", "ci_high")}
                continue
            v, entry = r.verdict, entries.get(name)
            key = partial(schema.model_key, name)  # key("verdict", "p_holm") -> <name>/verdict/p_holm
            metrics |= (r.summary.as_dict(key(metric, "")) | v.as_dict(key("verdict", ""))
                        | r.equivalence.as_dict(key("tost", "")) | r.reliance.as_dict(key("reliance", "")))
            params |= (r.summary.as_params(key(metric, "")) | v.as_params(key("verdict", ""))
                       | r.reliance.as_params(key("reliance", ""))
                       | {key("call"): r.call.label, key("call_reason"): r.call.reason, key("direction"): r.call.direction,
                          key("role"): role[name], key("architecture"): entry.adapter if entry else "unknown"})
            # each verdict word a report shows is a logged number it can cite: 1 for the call made, 0 for the others
            metrics |= {schema.call_key(name, label): int(r.call.label == label) for label in CALLS}
            passed = None
            if role[name] == gates_mod.CALIBRATION:
                planted = controls.planted_direction(entry.adapter, entry.source) if entry else None
                measured = controls.measured_direction(v.collapsed, v.dominant, r.call.label, r.call.direction)
                passed = controls.control_passed(planted, measured)
                params |= {key("control", "planted"): planted or "unknown", key("control", "measured"): measured}
                if passed is not None:
                    metrics[key("control", "passed")] = passed
            verdicts.append(gates_mod.ModelVerdict(name, role[name], v.collapsed, entry.adapter if entry else name, passed))
        for r in analysis.pairwise:
            if r.metric == metric:
                pair = schema.pair_key(r.model_a, r.model_b)
                metrics |= r.comparison.as_dict(pair) | {pair + "p_holm": r.p_holm, pair + "reject_holm": r.reject}
        metrics |= _layer_models(results, params)
        metrics |= _calibration_evidence(metric, params)
        metrics |= _baseline_robustness(results, subjects, gates, params)
        for name, res in results.items():  # MM-SHAP beside the verdict metric
            ps = res.per_sample
            if "mm_shap_signed_v" in ps and ps["mm_shap_signed_v"].notna().any() and metric in ps:
                agreement = metric_agreement.compare(ps[metric], ps["mm_shap_v"], ps["mm_shap_sum_image"],
                                                     ps["mm_shap_sum_text"], ps["mm_shap_signed_v"], gates.imbalance_threshold)
                metrics |= agreement.as_dict(schema.model_key(name, "signed", ""))
                params |= agreement.as_params(schema.model_key(name, "signed", ""))
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
        run.tags({schema.DECISION: result.decision, schema.RULE: result.rule,
                  schema.COLLAPSED_MODELS: ",".join(result.collapsed) or "none", schema.TESTED_MODELS: ",".join(result.tested) or "none",
                  schema.EXCLUDED_MODELS: ",".join(result.controls) or "none", schema.BLOCKED_MODELS: ",".join(result.blocked) or "none",
                  schema.CONTROLS_FAILED: ",".join(result.controls_failed) or "none",
                  schema.TRUSTWORTHY: str(result.trustworthy).lower()})
        evidence.RunLog(cycle.run_id).tags({schema.DECISION: result.decision})
        if results:
            folder = cycle.report_dir / "results"
            forest = figures.forest_plot(analysis.per_model_frame().query("metric == @metric"), gates.imbalance_threshold,
                                             gates.baseline, folder / "forest_plot.png")
            run.artifact(forest, "plots")
            reliance_plot = reliance_histogram(table.query("metric == @metric"), gates.imbalance_threshold,
                                                           folder / "per_sample_reliance.png")
            run.artifact(reliance_plot, "plots")
        outcome = Outcome(action.id, COMPLETED, run.run_id, data=result)
    return finish(run, outcome)


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
            out |= {schema.model_key(name, "robust", short, "mean"): r.summary.mean,
                    schema.model_key(name, "robust", short, "collapsed"): r.verdict.collapsed}
            params[schema.model_key(name, "robust", short, "outcome")] = outcome
        if outcomes:
            out |= {schema.model_key(name, "robust", "baselines"): len(outcomes),
                    schema.model_key(name, "robust", "spread"): max(means) - min(means),
                    schema.model_key(name, "robust", "robust"): len(outcomes) == len(BASELINES) and len(set(outcomes.values())) == 1}
    return out


def _calibration_evidence(metric: str, params: dict[str, str]) -> dict[str, float]:
    """Whether the latest ``fusionaudit calibrate`` run showed that the verdict metric separates the zoo."""
    client = evidence.client()
    exp = client.get_experiment_by_name(schema.CALIBRATION_EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=50,
                              order_by=["attributes.start_time DESC"]) if exp else []
    latest = next((r for r in runs if schema.calibration_score_key(metric, "separates") in r.data.metrics), None)
    if latest is None:
        params["calibration_run"] = "none"
        return {}
    params["calibration_run"] = latest.info.run_id
    scores = {k: schema.calibration_score_key(metric, k) for k in ("separates", "sensitivity", "specificity")}
    return {schema.calibration_key(metric, k): latest.data.metrics[key] for k, key in scores.items() if key in latest.data.metrics}


def _layer_models(results: dict[str, DiagnosticResult], params: dict[str, str]) -> dict[str, float]:
    """Per model, a mixed-effects model of the per-layer attention share (samples as groups), convergence reported."""
    out: dict[str, float] = {}
    for name, result in results.items():
        pl = result.per_layer
        if not len(pl) or "attn_visual_share" not in pl or pl["attn_visual_share"].notna().sum() < 8:
            continue
        long = pl.rename(columns={"attn_visual_share": "value"}).assign(model=name)[["model", "sample_id", "layer_index", "value"]].dropna()
        fit = fit_layer_model(long)
        out |= {schema.model_key(name, "layers", "converged"): bool(fit.converged),
                schema.model_key(name, "layers", "reliable"): bool(fit.reliable)}
        params[schema.model_key(name, "layers", "warnings")] = "; ".join(fit.warnings) or "none"
    return out
