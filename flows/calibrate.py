"""``calibrate``: every metric checked against the calibration zoo over several training seeds.

    train/load zoo models (variant × seed) ─▶ diagnose each on the synthetic set
        ─▶ calls, sensitivity/specificity, agreement (tasks.stats.calibration)
        ─▶ MM-SHAP Monte-Carlo error vs permutations (first seed's models)
        ─▶ MLflow (experiment "fusionaudit-calibration": a parent run, a child per (variant, seed))
        ─▶ calibration_report.md rendered from that evidence and verified

The flow is thin: the numbers come from ``tasks.stats.calibration``; this file
only runs the models, logs, renders and verifies.
"""
from __future__ import annotations

from datetime import datetime, timezone
from functools import partial

import numpy as np
import pandas as pd
from prefect import flow

from agents.quality_officer import assess
from tasks import evidence, progress
from tasks.adapters.zoo.calibration import SEEDS, VARIANTS
from tasks.diagnostics.run import MM_SHAP_PERMUTATIONS
from tasks.evidence import schema
from tasks.reporting.rendering import make_env
from tasks.runtime.paths import reports_root
from tasks.stages.calibration import DATA_SEED, diagnose_zoo, mm_shap_runs
from tasks.stats import calibration

PERMUTATIONS = (2, 4, 8, 16, 32)  # MM-SHAP counts of the Monte-Carlo error study
CALL_CODE = {"text": -1, "neither": 0, "vision": 1}  # a call as a loggable number


def check_args(samples: int, seeds: list[int], permutations: list[int], threshold: float = calibration.DEFAULT_THRESHOLD,
               mc_samples: int = 8, mc_repeats: int = 5) -> None:
    """Raise ValueError naming every bad argument and its fix, before any model is trained."""
    problems = []
    if samples < 8:
        problems.append(f"samples={samples}: use at least 8 (a CI95 needs them)")
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        problems.append(f"seeds={seeds}: give distinct non-negative training seeds, e.g. 0,1,2")
    if not permutations or any(p < 2 for p in permutations):
        problems.append(f"permutations={permutations}: each count must be >= 2 (MM-SHAP samples antithetic pairs)")
    if not 0.5 < threshold < 1:
        problems.append(f"threshold={threshold}: the imbalance threshold lies in (0.5, 1), e.g. 0.80")
    if mc_samples < 1 or mc_repeats < 2:
        problems.append(f"mc_samples={mc_samples}, mc_repeats={mc_repeats}: need >= 1 sample and >= 2 repeats "
                        "(the spread across repeats needs two)")
    if problems:
        raise ValueError("calibrate: " + "; ".join(problems))


def _finite(values: dict) -> dict:
    """MLflow stores NaN, but a report should say n/a for a missing value rather than cite a NaN."""
    return {k: float(v) for k, v in values.items() if v is not None and np.isfinite(float(v))}


def _log_child(experiment: str, parent: str, variant: str, seed: int, calls: pd.DataFrame, facts: dict,
               per_sample: pd.DataFrame) -> str:
    run = evidence.start_run(experiment, f"{variant}-seed{seed}", parent,
                             tags={schema.KIND: "calibration-model", schema.VARIANT: variant, schema.SEED: seed})
    mine = calls[(calls["variant"] == variant) & (calls["seed"] == seed)]
    values: dict[str, float] = {k: v for k, v in facts.items() if k.startswith(schema.held_out_key("")) or k == "from_cache"}
    for r in mine.itertuples():
        key = partial(schema.metric_field_key, r.metric)  # key("ci_low") -> <metric>/ci_low
        values |= {key("n"): r.n, key("mean"): r.mean, key("ci_low"): r.ci_low, key("ci_high"): r.ci_high,
                   key("call"): CALL_CODE[r.call], key("correct"): int(r.correct)}
    run.metrics(_finite(values))
    run.params({"seed": seed, "variant": variant, "zoo_revision": facts["revision"],
                **{schema.metric_field_key(r.metric, "ci_method"): r.ci_method for r in mine.itertuples()}})
    run.table(per_sample, "per_sample.csv")
    run.finish()
    return run.run_id


def _parent_metrics(scores: pd.DataFrame, agree: pd.DataFrame, errors: pd.DataFrame,
                    concentration: pd.DataFrame) -> dict[str, float]:
    values: dict[str, float] = {}
    for r in scores.itertuples():
        for k in ("sensitivity", "specificity", "separates", "wrong_way", "wrong_way_seeds", "balanced_between",
                  "n_seeds", "text_dominant_mean", "balanced_mean", "vision_dominant_mean"):
            values[schema.calibration_score_key(r.metric, k)] = float(getattr(r, k))
    for r in agree.itertuples():
        values[schema.agreement_key(r.scope, r.metric_a, r.metric_b, "rho")] = r.rho
        values[schema.agreement_key(r.scope, r.metric_a, r.metric_b, "n")] = r.n
    for r in errors.itertuples():
        for k in ("mean_se", "spread", "se_to_spread", "mean_v", "n_samples", "n_repeats"):
            values[schema.mc_key(r.variant, r.permutations, k)] = float(getattr(r, k))
        values[schema.mc_key(r.variant, r.permutations, "permutations")] = float(r.permutations)  # cited in the table
    for variant, group in concentration.groupby("variant"):
        for k in ("top_image_share", "top_text_share", "image_players", "text_players", "image_share"):
            values[schema.concentration_key(variant, k)] = float(group[k].mean())
    return _finite(values)


def _view(parent_id: str, seeds: list[int], permutations: list[int], threshold: float) -> dict:
    """What the template may show: the run tree read back from MLflow (every number a ``Cited``)."""
    tree = evidence.read_run(parent_id)
    children = {(c.tags[schema.VARIANT], int(c.tags[schema.SEED])): c for c in tree.children
                if c.tags.get(schema.KIND) == "calibration-model"}
    scored = [m for m in calibration.METRICS if tree.m(schema.calibration_score_key(m, "separates")) is not None]
    flag = lambda m, k: bool(tree.m(schema.calibration_score_key(m, k)) and tree.m(schema.calibration_score_key(m, k)).value == 1)  # noqa: E731
    scopes = ["pooled", *VARIANTS]
    pairs = [(a, b) for i, a in enumerate(scored) for b in scored[i + 1:]]
    return {
        "run": tree, "children": children, "variants": VARIANTS, "seeds": seeds, "permutations": permutations,
        "metrics": scored, "threshold": threshold, "scopes": scopes, "pairs": pairs,
        "separating": [m for m in scored if flag(m, "separates")],
        "wrong_way": [m for m in scored if flag(m, "wrong_way")],
        "neither": [m for m in scored if not flag(m, "separates") and not flag(m, "wrong_way")],
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@flow(name="calibrate", log_prints=True)
def calibrate(samples: int = 64, seeds: list[int] | None = None, permutations: list[int] | None = None,
              threshold: float = calibration.DEFAULT_THRESHOLD, mc_samples: int = 8, mc_repeats: int = 5,
              mm_shap_permutations: int = MM_SHAP_PERMUTATIONS, n_resamples: int = 9999) -> dict:
    """Calibrate every metric on the zoo; returns the report path, per-metric flags and the verification.

    ``samples``: synthetic samples per model; ``seeds``: zoo training seeds
    (default 0, 1, 2); ``permutations``: MM-SHAP counts (default 2, 4, 8, 16, 32) for the Monte-Carlo error study, run on
    ``mc_samples`` samples of each variant of the first seed, ``mc_repeats``
    sampling seeds each; ``threshold``: the mission's imbalance threshold.
    """
    seeds = [int(s) for s in (SEEDS if seeds is None else seeds)]
    permutations = sorted({int(p) for p in (PERMUTATIONS if permutations is None else permutations)})
    check_args(samples, seeds, permutations, threshold, mc_samples, mc_repeats)
    experiment = evidence.ensure_experiment(schema.CALIBRATION_EXPERIMENT)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    parent = evidence.start_run(experiment, f"calibration-{stamp}", tags={schema.KIND: "calibration"})
    try:
        parent.params({"samples": samples, "seeds": ",".join(map(str, seeds)),
                       "permutations": ",".join(map(str, permutations)), "threshold": threshold,
                       "mc_samples": mc_samples, "mc_repeats": mc_repeats, "data_seed": DATA_SEED,
                       "mm_shap_permutations": mm_shap_permutations, "n_resamples": n_resamples})
        parent.metrics({"threshold": threshold, "samples": samples, "n_seeds": len(seeds),
                        "text_cut": round(1 - threshold, 12)})
        frames, facts = [], {}
        runs_total = len(seeds) * len(VARIANTS)
        for seed in seeds:
            for variant in VARIANTS:
                progress.report("stage", "zoo diagnostics", len(frames), runs_total + 3)
                progress.report("model", f"{variant}, seed {seed}", len(frames), runs_total)
                frame, facts[variant, seed] = diagnose_zoo(variant, seed, samples, mm_shap_permutations)
                frames.append(frame)
        progress.report("stage", "metric calls", runs_total, runs_total + 3)
        per_sample = pd.concat(frames, ignore_index=True)
        calls = calibration.metric_calls(per_sample, threshold=threshold, n_resamples=n_resamples)
        scores = calibration.metric_scores(calls)
        agree = calibration.agreement(per_sample)
        progress.report("stage", "MM-SHAP Monte-Carlo error", runs_total + 1, runs_total + 3)
        mc = []
        for i, v in enumerate(VARIANTS):
            progress.report("model", v, i, len(VARIANTS))
            mc.append(mm_shap_runs(v, seeds[0], permutations, mc_samples, mc_repeats))
        runs, concentration = (pd.concat(parts, ignore_index=True) for parts in zip(*mc))
        errors = calibration.mc_error(runs)

        for (variant, seed), f in facts.items():
            _log_child(experiment, parent.run_id, variant, seed, calls, f,
                       per_sample[(per_sample["variant"] == variant) & (per_sample["seed"] == seed)])
        parent.metrics(_parent_metrics(scores, agree, errors, concentration))
        for frame, name in ((calls, "calls.csv"), (scores, "scores.csv"), (agree, "agreement.csv"),
                            (errors, "mc_error.csv"), (runs, "mc_runs.csv"), (concentration, "concentration.csv")):
            parent.table(frame, name)

        report_dir = reports_root() / "calibration" / parent.run_id
        plots = report_dir / "plots"
        plots.mkdir(parents=True, exist_ok=True)
        calibration.calls_figure(calls, threshold).savefig(plots / "metric_means.png", dpi=110)
        calibration.mc_error_figure(errors).savefig(plots / "mc_error.png", dpi=110)
        for png in sorted(plots.glob("*.png")):
            parent.artifact(png, "plots")

        progress.report("stage", "report", runs_total + 2, runs_total + 3)
        view = _view(parent.run_id, seeds, permutations, threshold)
        report = report_dir / "calibration_report.md"
        report.write_text(make_env().get_template("results/calibration_report.md.j2").render(**view), encoding="utf-8")
        assessment = assess([report])  # the same check the cycle's reports and `fusionaudit verify` use
        problems, checked, verified = assessment.findings, assessment.citations_checked, assessment.verified
        parent.artifact(report, "report")
        parent.tags({schema.VERDICT: "VERIFIED" if verified else "NOT VERIFIED", schema.REPORT: str(report)})
        parent.finish()
        progress.report("stage", "done", runs_total + 3, runs_total + 3)
    except BaseException:
        parent.finish("FAILED")
        raise
    separates = {m: bool(r) for m, r in zip(scores["metric"], scores["separates"])}
    wrong_way = {m: bool(r) for m, r in zip(scores["metric"], scores["wrong_way"])}
    print(f"calibration report {report}: {'VERIFIED' if verified else 'NOT VERIFIED'} ({checked} citations); "
          f"separating: {[m for m, s in separates.items() if s]}")
    return {"report": str(report), "run_id": parent.run_id, "separates": separates, "wrong_way": wrong_way,
            "verified": verified, "findings": problems, "citations_checked": checked,
            "scores": scores.to_dict(orient="records")}
