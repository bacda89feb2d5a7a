"""The quality review: every action's acceptance criteria against its evidence; final statuses counted."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from agents.quality_officer import check_criteria, final_status
from tasks import evidence
from tasks.actions import BLOCKED, COMPLETED, FAILED, Cycle, open_child
from tasks.evidence import schema


@task(name="quality-review", task_run_name="quality review", cache_policy=NO_CACHE)
def quality_review(cycle: Cycle) -> dict[str, int]:
    """Acceptance criteria of every action against its evidence; final statuses counted on the cycle run."""
    tree = evidence.read_run(cycle.run_id)
    checks = check_criteria(cycle.mission, tree)
    run = open_child(cycle, cycle.run_id, "quality-review", {schema.KIND: "quality"})
    counts = {COMPLETED: 0, BLOCKED: 0, FAILED: 0}
    for action in cycle.mission.actions:
        action_ev = tree.child(schema.ACTION_ID, action.id)
        stage_status = action_ev.tags.get(schema.STATUS, FAILED) if action_ev else FAILED
        status = final_status(stage_status, [c for c in checks if c.action_id == action.id])
        counts[status] = counts.get(status, 0) + 1
        if action_ev:
            evidence.RunLog(action_ev.run_id).tags({schema.FINAL_STATUS: status})
    run.metrics({"criteria_checked": len(checks), "criteria_passed": sum(c.passed for c in checks),
                 "criteria_failed": sum(not c.passed for c in checks)})
    evidence.RunLog(cycle.run_id).metrics({"actions_completed": counts[COMPLETED], "actions_blocked": counts[BLOCKED],
                                           "actions_failed": counts[FAILED], "actions_total": len(cycle.mission.actions)})
    return counts
