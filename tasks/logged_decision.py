"""The one decision read back from a cycle's evidence: ``tasks.stats.gates.decide`` on the verdicts the statistics stage logged.

The planner and every report call ``logged_decision`` on the same logged verdicts the stage decided from, so
the three cannot disagree; a cycle whose statistics did not run has no verdicts and needs more data.
"""
from __future__ import annotations

from tasks.evidence import RunEvidence, schema
from tasks.mission import Mission
from tasks.stats.gates import SUBJECT, GateResult, ModelVerdict, decide


def action_run(mission: Mission, cycle: RunEvidence, stage: str) -> RunEvidence | None:
    """The child run of the mission's action for ``stage`` in ``cycle``, if it ran."""
    action = mission.for_stage(stage)
    return cycle.child(schema.ACTION_ID, action.id) if action else None


def logged_verdicts(mission: Mission, stats_run: RunEvidence) -> list[ModelVerdict]:
    """The per-model verdicts the statistics stage logged (role, Holm-corrected collapse, control result)."""
    metric = mission.gates.metric
    out = []
    for name in schema.analysed_models(stats_run.metrics, metric):
        collapsed = stats_run.m(schema.model_key(name, "verdict", "collapsed"))
        passed = stats_run.m(schema.model_key(name, "control", "passed"))
        out.append(ModelVerdict(name, stats_run.params.get(schema.model_key(name, "role"), SUBJECT),
                                bool(collapsed and collapsed.value == 1),
                                stats_run.params.get(schema.model_key(name, "architecture"), name),
                                None if passed is None else bool(passed.value == 1)))
    return out


def logged_decision(mission: Mission, cycle: RunEvidence) -> GateResult:
    """The decision on the verdicts logged in ``cycle``'s statistics run."""
    run = action_run(mission, cycle, "statistics")
    if run is None:
        return decide([], mission.gates)
    blocked = [n for n in run.tags.get(schema.BLOCKED_MODELS, "none").split(",") if n != "none"]
    return decide(logged_verdicts(mission, run), mission.gates, blocked)
