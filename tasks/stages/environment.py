"""T2: the environment check: the machine's snapshot, package drift, and one real forward pass."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.actions import BLOCKED, COMPLETED, Cycle, Outcome, action_run, action_task_name
from tasks.adapters.contract import ModelSpec
from tasks.adapters.registry import load_model
from tasks.data.synthetic import make_synthetic
from tasks.evidence import schema
from tasks.mission import Action
from tasks.runtime import environment
from tasks.runtime.environment import environment_snapshot
from tasks.stages._common import PROJECT_ROOT, RETRY, finish


@task(name="environment-check", task_run_name=action_task_name, cache_policy=NO_CACHE, **RETRY)
def check_environment(cycle: Cycle, action: Action) -> Outcome:
    with action_run(cycle, action) as run:
        snap = environment_snapshot(schema.env_key)  # redacted: no token or URI password reaches the evidence
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
    return finish(run, outcome)


def _test_inference() -> int:
    """A real forward pass on sample pairs: torch, the data and an adapter work together."""
    samples = make_synthetic(4, seed=123)
    model = load_model(ModelSpec(name="zoo-balanced", adapter="zoo", source="balanced"))
    scores = model.score(model.prepare([s.image for s in samples], [s.caption for s in samples], [s.sample_id for s in samples]))
    return int(scores.isfinite().sum())
