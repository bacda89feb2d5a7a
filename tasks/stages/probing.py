"""The Prefect tasks of a probing cycle: thin wrappers that log evidence around the pure modules.

start-probing-cycle ─▶ models (P1) ─▶ extraction (P2) ─▶ probes (P3) ─▶ decision (P5)
                               └─▶ alignment (P4)

Each stage opens its action's MLflow run and one child run per model, logs
every number, and returns an ``Outcome``; a model that cannot be opened is
*Blocked* (weights missing offline) and the cycle goes on with the others.
"""
from __future__ import annotations

import math
from datetime import timedelta
from functools import partial

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from agents.planner import pending_actions
from tasks import evidence
from tasks.actions import BLOCKED, COMPLETED, FAILED, Cycle, Outcome, action_run, open_child, record, tracked
from tasks.adapters.contract import ModelSpec, WeightsUnavailable
from tasks.adapters.registry import load_model
from tasks.evidence import schema
from tasks.probing import alignment, decision, plots, probes
from tasks.probing.extract import Features, extract
from tasks.probing.ground_truth import SpatialSet, split
from tasks.probing.mission import Action, ProbingMission, ProbingModel
from tasks.probing.points import NotExtractable, n_lm_layers, point_key
from tasks.reporting import views
from tasks.stages._common import finish, keep_mission_as_run, open_cycle, open_model_run


def model_spec(cycle: Cycle, entry: ProbingModel) -> ModelSpec:
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.random_init_config.items()}
    if entry.adapter == "zoo-spatial":
        config = {"seed": entry.seed}
    return ModelSpec(name=entry.name, adapter=entry.adapter, source=entry.source, arch=entry.arch,
                     allow_random_init=cycle.allow_random_init and not entry.calibration,
                     random_init_config=tuple(sorted(config.items())))


def role(entry: ProbingModel, random_init: bool) -> str:
    return "calibration" if entry.calibration else "random-init" if random_init else "subject"


# ------------------------------------------------------------------ the cycle run

@task(name="start-probing-cycle", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def start_cycle(mission: ProbingMission, mission_path: str, allow_random_init: bool) -> Cycle:
    started, cycle_id, experiment, run, report_dir = open_cycle(mission.id, kind="probing")
    run.params({"mission_path": mission_path, "data": mission.data.kind, "samples": mission.data.samples,
                "seed": mission.data.seed, "allow_random_init": allow_random_init,
                "models": ",".join(m.name for m in mission.models)})
    actions = pending_actions(mission, started)
    for entry in actions:
        entry["deadline"] = (started + timedelta(hours=entry["deadline_hours"])).isoformat(timespec="minutes")
    run.artifact(views.write_pending_actions(actions, report_dir), "handoff")
    keep_mission_as_run(run, mission, report_dir)
    return Cycle(mission, mission_path, cycle_id, experiment, run.run_id, report_dir, started, allow_random_init)


# ------------------------------------------------------------------ P1 models

@task(name="probing-models", cache_policy=NO_CACHE)
def models_stage(cycle: Cycle, action: Action) -> Outcome:
    """Open every model; record its role (subject / calibration / RANDOM-INIT) and its points' layers."""
    opened = {}
    with action_run(cycle, action) as run:
        for entry in cycle.mission.models:
            child = open_model_run(cycle, run.run_id, entry.name)
            child.params({"adapter": entry.adapter, "source": entry.source or "none",
                          "points": ",".join(f"{p.id}={p.at}" + (f"@{p.depth:g}" if p.depth else "") for p in entry.points)})
            try:
                with tracked(child):
                    model = load_model(model_spec(cycle, entry))
                    layers = n_lm_layers(model, entry.adapter)
            except WeightsUnavailable as exc:
                get_run_logger().warning("%s is Blocked: %s", entry.name, exc)
                record(child, Outcome(entry.name, BLOCKED, child.run_id, reason=exc.reason,
                                      mitigation=f"{exc.mitigation} (looked in: {'; '.join(exc.searched)})"))
                continue
            except NotExtractable as exc:
                record(child, Outcome(entry.name, BLOCKED, child.run_id, reason=str(exc),
                                      mitigation="probe this architecture through an adapter with extraction hooks"))
                continue
            keys = {p.id: point_key(entry, p, layers) for p in entry.points}
            child.params({schema.point_layer_key(pid): key for pid, key in keys.items()})
            child.tags({schema.ROLE: role(entry, model.random_init), schema.RANDOM_INIT: str(model.random_init).lower(),
                        schema.FAMILY: model.family, schema.REVISION: model.revision})
            child.metrics({"lm_layers": layers, "random_init": int(model.random_init), "points": len(keys)})
            record(child, Outcome(entry.name, COMPLETED, child.run_id))
            opened[entry.name] = keys
        run.metrics({"models_requested": len(cycle.mission.models), "models_loaded": len(opened),
                     "models_blocked": len(cycle.mission.models) - len(opened)})
        outcome = Outcome(action.id, COMPLETED if opened else BLOCKED, run.run_id, data=opened,
                          reason="" if opened else "no model could be opened",
                          mitigation="" if opened else "provide weights, or run with --allow-random-init")
    return finish(run, outcome)


# ------------------------------------------------------------------ P2 extraction

@task(name="probing-extraction", cache_policy=NO_CACHE)
def extraction_stage(cycle: Cycle, action: Action, opened: dict[str, dict[str, str]], data: SpatialSet) -> Outcome:
    """Pooled image-token states at every point, streamed to the cache (reused when nothing changed)."""
    probe = cycle.mission.probe
    done: dict[str, tuple[Features, dict[str, str]]] = {}
    with action_run(cycle, action) as run:
        run.params({"dataset": data.kind, "dataset_hash": data.content_hash, "pool": probe.pool})
        for name, keys in opened.items():
            entry = cycle.mission.model(name)
            child = open_model_run(cycle, run.run_id, entry.name)
            try:
                with tracked(child):
                    model = load_model(model_spec(cycle, entry))
                    features = extract(model, entry.adapter, f"{entry.adapter}:{entry.source}:{name}", data.samples,
                                       tuple(dict.fromkeys(keys.values())), probe.pool, probe.tokens, probe.batch_size,
                                       data.content_hash)
            except Exception as exc:  # noqa: BLE001 - one model failing does not stop the others
                record(child, Outcome(name, FAILED, child.run_id, reason=f"{type(exc).__name__}: {exc}",
                                      mitigation="see the flow run's logs; a re-run reuses every finished extraction"))
                continue
            child.metrics({"samples": features.n, "points": len(keys),
                           **{schema.feature_dim_key(pid): features.load(key).shape[1] for pid, key in keys.items()}})
            child.tags({schema.CACHED: str(features.cached).lower()})
            record(child, Outcome(name, COMPLETED, child.run_id))
            done[name] = (features, keys)
        run.metrics({"models_extracted": len(done), "samples": len(data.samples),
                     "points_per_model_min": min((len(k) for _, k in done.values()), default=0)})
        outcome = Outcome(action.id, COMPLETED if done else BLOCKED, run.run_id, data=done,
                          reason="" if done else "no model was extracted", mitigation="" if done else "see P1's blockers")
    return finish(run, outcome)


# ------------------------------------------------------------------ P3 probes

@task(name="probing-probes", cache_policy=NO_CACHE)
def probes_stage(cycle: Cycle, action: Action, extracted: dict, data: SpatialSet) -> Outcome:
    """Every probe and its control task, per point, trained on one split of images and scored on the other."""
    mission, probe = cycle.mission, cycle.mission.probe
    train, test = split(len(data.samples), mission.data.test_fraction, mission.data.seed)
    boxes = data.boxes()
    thresholds = {t.metric: t.value for t in mission.thresholds}
    tested, missing_controls = [], 0
    with action_run(cycle, action) as run:
        run.metrics({"train_images": len(train), "test_images": len(test), "bootstrap_resamples": probe.bootstrap,
                     "alpha": probe.alpha})
        run.params({"control_task": probe.control, "pool": probe.pool, "tokens": probe.tokens, "grid": probe.grid})
        for name, (features, keys) in extracted.items():
            entry = mission.model(name)
            child = open_model_run(cycle, run.run_id, entry.name)
            per_point: dict[str, dict[str, float]] = {}
            with tracked(child):
                for pid, key in keys.items():
                    x = features.load(key)
                    real = probes.fit_point(x, boxes, train, test, probe.grid, mission.targets)
                    control = probes.fit_point(x, boxes, train, test, probe.grid, mission.targets,
                                               control=probe.control)
                    per_point[pid] = probes.summarise(real, control, probe.bootstrap, probe.alpha)
                    missing_controls += int(schema.metric_field_key("bbox_iou", "control") not in per_point[pid])
            child.metrics({schema.probe_key(pid, k): v for pid, m in per_point.items() for k, v in m.items() if not _nan(v)})
            child.params({"point_order": ",".join(keys), "stages": ",".join(entry.stage(p) for p in entry.points)})
            curve = plots.layer_curves(name, list(keys), per_point, thresholds,
                                       cycle.report_dir / "results" / f"{name}_probe_curves.png")
            child.artifact(curve, "plots")
            record(child, Outcome(name, COMPLETED, child.run_id))
            tested.append(min(m["test_images_with_object"] for m in per_point.values()))
        run.metrics({"models_probed": len(tested), "test_images_min": min(tested, default=0),
                     "controls_missing": missing_controls})
        outcome = Outcome(action.id, COMPLETED if tested else BLOCKED, run.run_id,
                          reason="" if tested else "no model had features", mitigation="" if tested else "see P2")
    return finish(run, outcome)


def _nan(v: float) -> bool:
    return isinstance(v, float) and math.isnan(v)


# ------------------------------------------------------------------ P4 alignment

@task(name="probing-alignment", cache_policy=NO_CACHE)
def alignment_stage(cycle: Cycle, action: Action, extracted: dict) -> Outcome:
    """Linear CKA (plain and debiased) between every pair of points, per model; heatmaps."""
    made = 0
    with action_run(cycle, action) as run:
        for name, (features, keys) in extracted.items():
            entry = cycle.mission.model(name)
            child = open_model_run(cycle, run.run_id, entry.name)
            reps = {pid: np.asarray(features.load(key)) for pid, key in keys.items()}
            names, linear = alignment.cka_matrix(reps)
            _, debiased = alignment.cka_matrix(reps, debiased=True)
            vision = next(p.id for p in entry.points if entry.stage(p) == "vision")
            metrics = {}
            for i, a in enumerate(names):
                for j, b in enumerate(names):
                    metrics[schema.cka_key(a, b)] = linear[i, j]
                    metrics[schema.cka_key(a, b, debiased=True)] = debiased[i, j]
            child.metrics({k: v for k, v in metrics.items() if not _nan(v)} | {"samples": len(reps[vision])})
            child.params({"reference_point": vision, "point_order": ",".join(names)})
            child.artifact(plots.cka_heatmap(name, names, linear, debiased,
                                             cycle.report_dir / "results" / f"{name}_cka.png"), "plots")
            record(child, Outcome(name, COMPLETED, child.run_id))
            made += 1
        run.metrics({"matrices": made, "matrices_missing": len(extracted) - made})
        outcome = Outcome(action.id, COMPLETED if made else BLOCKED, run.run_id,
                          reason="" if made else "no model had features", mitigation="" if made else "see P2")
    return finish(run, outcome)


# ------------------------------------------------------------------ P5 decision

@task(name="probing-decision", cache_policy=NO_CACHE)
def decision_stage(cycle: Cycle, action: Action, probes_run: str, models_run: str) -> Outcome:
    """The decision matrix and the selection, from the probe metrics as read back from the evidence store."""
    mission = cycle.mission
    probed = evidence.read_run(probes_run)
    opened = evidence.read_run(models_run)
    rows = []
    for entry in mission.models:
        child = probed.child(schema.MODEL, entry.name)
        model = opened.child(schema.MODEL, entry.name)
        if child is None or model is None:
            continue
        per_point: dict[str, dict[str, float]] = {}
        for key, c in child.metrics.items():
            pid, metric = schema.probe_key_parts(key)
            per_point.setdefault(pid, {})[metric] = float(c.value)
        points = [p.id for p in entry.points if entry.stage(p) in mission.decision.stages]
        rows.append(decision.judge(entry.name, model.tags.get(schema.ROLE, "subject"), per_point, points,
                                   mission.thresholds, mission.decision.pass_on))
    chosen = decision.select(rows, mission.selection.top, mission.selection.rank_by, mission.selection.require)
    planted = {m.name: m.planted for m in mission.models if m.planted}
    separated = decision.calibration_separated(rows, planted)
    with action_run(cycle, action) as run:
        metrics = {schema.threshold_key(t.metric): t.value for t in mission.thresholds}
        params = {}
        for r in rows:
            for c in r.cells:
                cell = partial(schema.matrix_key, r.model, c.metric)  # cell("passed") -> matrix/<model>/<metric>/passed
                metrics |= {cell("value"): c.value, cell("judged"): c.judged, cell("passed"): c.passed}
                params[cell("point")] = c.point
            metrics[schema.matrix_key(r.model, "passed")] = sum(c.passed for c in r.cells)
        subjects = [r for r in rows if r.role == "subject"]
        metrics |= {"models_judged": len(rows), "subjects_judged": len(subjects), "selected": len(chosen),
                    "selection_top": mission.selection.top,
                    "calibration_separated": -1 if separated is None else int(separated)}
        run.metrics({k: v for k, v in metrics.items() if not _nan(v)})
        run.params(params | {"pass_on": mission.decision.pass_on, "decision_stages": ",".join(mission.decision.stages)})
        run.tags({schema.SELECTED_MODELS: ",".join(r.model for r in chosen) or "none",
                  schema.ROLES: ",".join(f"{r.model}={r.role}" for r in rows)})
        evidence.RunLog(cycle.run_id).tags({schema.DECISION: "SELECTED" if chosen else "NONE_SELECTED"})
        outcome = Outcome(action.id, COMPLETED if rows else BLOCKED, run.run_id, data=[r.model for r in chosen],
                          reason="" if rows else "no model was probed", mitigation="" if rows else "see P3")
    return finish(run, outcome)


# ------------------------------------------------------------------ reports

@task(name="probing-reports", cache_policy=NO_CACHE)
def write_reports(cycle: Cycle) -> dict[str, object]:
    """Render the handoff from evidence, verify every citation, render again with the verdict."""
    from agents.quality_officer import assess
    from tasks.probing.report import probing_view, render
    from tasks.reporting.rendering import make_env

    env = make_env()
    first = assess(render(env, probing_view(cycle.mission, evidence.read_run(cycle.run_id)), cycle.report_dir))
    quality = open_child(cycle, cycle.run_id, "quality-review", {schema.KIND: "quality"})
    quality.metrics({"citations_checked": first.citations_checked, "findings": len(first.findings)})
    quality.tags({schema.VERDICT: "VERIFIED" if first.verified else "NOT VERIFIED"})
    tree = evidence.read_run(cycle.run_id)
    paths = render(env, probing_view(cycle.mission, tree, quality=tree.child(schema.KIND, "quality")), cycle.report_dir)
    final = assess(paths)
    verdict = "VERIFIED" if final.verified and first.verified else "NOT VERIFIED"
    quality.tags({schema.VERDICT: verdict})
    quality.metrics({"citations_checked_final": final.citations_checked, "findings_final": len(final.findings)})
    if final.findings:
        (cycle.report_dir / "handoff" / "verification_findings.txt").write_text("\n".join(final.findings) + "\n",
                                                                                encoding="utf-8")
    for path in paths:
        evidence.RunLog(cycle.run_id).artifact(path, str(path.parent.relative_to(cycle.report_dir)))
    quality.finish()
    decision = tree.tags.get(schema.DECISION, "NONE_SELECTED")
    return {"handoff": str(paths[0]), "verdict": verdict, "findings": final.findings, "decision": decision}
