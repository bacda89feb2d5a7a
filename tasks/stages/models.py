"""T1 / T6: open every model of an action (the mission's models, then its alternatives)."""
from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks import evidence, progress
from tasks.actions import (BLOCKED, COMPLETED, FAILED, Cycle, Outcome, action_run, action_task_name, blocked, record, tracked)
from tasks.adapters.contract import WeightsUnavailable
from tasks.adapters.registry import load_model
from tasks.data.synthetic import make_synthetic
from tasks.evidence import schema
from tasks.mission import Action, ModelEntry
from tasks.stages._common import RETRY, finish, model_spec, open_model_run


@task(name="open-model", task_run_name="open-model/{entry.name}", cache_policy=NO_CACHE, **RETRY)
def open_model(cycle: Cycle, parent_run: str, entry: ModelEntry):
    """Load a model and trace two samples; Blocked when its weights are not on this machine."""
    run = open_model_run(cycle, parent_run, entry.name)
    spec = model_spec(cycle, entry)
    run.log(params={"adapter": entry.adapter, "source": entry.source, "arch": entry.arch or "none"},
            tags={schema.CALIBRATION: str(entry.calibration).lower()})
    with tracked(run):
        try:
            model = load_model(spec)
        except WeightsUnavailable as exc:
            get_run_logger().warning("%s is Blocked: %s", entry.name, exc)
            run.tags({schema.SEARCHED: "; ".join(exc.searched) or "nowhere", schema.FETCH: exc.fetch or "none"})
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
    run.log(tags={schema.FAMILY: model.family, schema.CAPABILITIES: ",".join(sorted(model.capabilities)),
                  schema.RANDOM_INIT: str(model.random_init).lower(), schema.REVISION: model.revision},
            metrics={"layers_traced": layers, "trace_coverage": coverage, "random_init": int(model.random_init)})
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
        traced = [r for r in runs.values() if "trace" in r.tags.get(schema.CAPABILITIES, "").split(",")]
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
    return finish(run, outcome)


def _model_outcome(cycle: Cycle, parent: str, entry: ModelEntry, state) -> Outcome:
    """One model that cannot be opened (a bad tag, a corrupt checkpoint) fails alone; the others go on."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, Outcome):
        return result
    run = open_model_run(cycle, parent, entry.name)
    return record(run, Outcome(entry.name, FAILED, run.run_id, reason=f"{type(result).__name__}: {result}",
                               mitigation=f"fix model {entry.name!r} in the mission (adapter, arch, source)"))
