"""The quality review on a real SQLite MLflow store: criteria checked against logged metrics, final statuses counted."""
from __future__ import annotations

from tasks import evidence
from tasks.actions import COMPLETED, Outcome, action_run, record
from tasks.stages.review import quality_review


def test_criteria_decide_final_statuses_and_the_counts_land_on_the_cycle_run(cycle):
    literature, environment = cycle.mission.for_stage("literature"), cycle.mission.for_stage("environment")
    with action_run(cycle, literature) as run:  # meets its criteria: >= 10 works, no unresolved citation
        run.metrics({"bib_entries": 12, "unresolved_citations": 0})
    record(run, Outcome(literature.id, COMPLETED, run.run_id))
    with action_run(cycle, environment) as run:  # completed, but logged none of its criteria's metrics
        pass
    record(run, Outcome(environment.id, COMPLETED, run.run_id))

    counts = quality_review.fn(cycle)

    tree = evidence.read_run(cycle.run_id)
    assert tree.child("fa.action_id", literature.id).tags["fa.final_status"] == COMPLETED
    assert tree.child("fa.action_id", environment.id).tags["fa.final_status"] != COMPLETED
    total = len(cycle.mission.actions)
    assert sum(counts.values()) == total and counts[COMPLETED] == 1
    assert tree.m("actions_total").value == total and tree.m("actions_completed").value == 1
    assert tree.m("actions_failed").value + tree.m("actions_blocked").value == total - 1
    review = tree.child("fa.kind", "quality")
    checked = review.m("criteria_checked").value
    assert checked >= len(literature.acceptance) and review.m("criteria_passed").value >= len(literature.acceptance)
    assert review.m("criteria_passed").value + review.m("criteria_failed").value == checked
