"""The planner's next plan from logged cycles: substitutions, gates re-evaluated, retries and escalation.

Three cycles are logged (each costs seconds of SQLite commits): a first one
with a blocked model, a failed action and a missed criterion; the cycle after
it, carrying the plan's tags, where the action fails again; and one where the
alternative is blocked too and a model ran on random weights.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import partial

import pytest

from agents.planner import pending_actions, plan_next
from agents.quality_officer import check_text
from tasks import evidence
from tasks.evidence import schema
from tasks.mission import Mission

OPENCLIP_BLOCKED = {"openclip-vit-b-32": "weights for ViT-B-32/laion2b_s34b_b79k are not in the local cache"}
DISK_FULL = "OSError: disk full"


@pytest.fixture(scope="module")
def first(week1, cycle_logger) -> evidence.RunEvidence:
    """openclip Blocked in T1 (its alternative opened in T6), T5 Failed, T7 missed a criterion."""
    return evidence.read_run(cycle_logger(week1, blocked=OPENCLIP_BLOCKED, statuses={"T5": ("Failed", DISK_FULL)},
                                          metrics={"T7": {"placeholders_filled": 2}}))


@pytest.fixture(scope="module")
def second(week1, first, cycle_logger) -> evidence.RunEvidence:
    """The next cycle, tagged as the first plan says; T5 fails again, T7 now meets its criteria."""
    tags = plan_next(week1, first).cycle_tags()
    return evidence.read_run(cycle_logger(week1, statuses={"T5": ("Failed", DISK_FULL)}, cycle_tags=tags))


def test_blocked_model_is_replaced_by_its_alternative(week1, first):
    plan = plan_next(week1, first)
    assert [m.name for m in plan.mission.models] == ["openclip-vit-b-32-openai", "zoo-text-dominant", "zoo-balanced",
                                                     "zoo-vision-dominant"]
    assert plan.mission.alternatives == ()  # promoted, so no longer an alternative (names stay unique)
    assert isinstance(plan.mission, Mission) and plan.mission.actions == week1.actions
    assert plan.substitutions == {"openclip-vit-b-32": ["openclip-vit-b-32-openai"]}
    blocked_run = first.child("fa.action_id", "T1").child("fa.model", "openclip-vit-b-32")
    change = next(c for c in plan.changes if "replaced by" in c.text)
    assert change.evidence == (f"{blocked_run.run_id}:tags/fa.status",) and blocked_run.run_id in change.text


def test_the_decision_is_the_logged_verdicts_through_the_one_decision_function(week1, first):
    """The zoo's planted collapse is found, but controls never count: no external model was tested."""
    stats_run = first.child("fa.action_id", "T3")
    for name in ("zoo-text-dominant", "zoo-vision-dominant"):
        key = partial(schema.model_key, name)
        assert stats_run.m(key("verdict", "collapsed")).value == 1 and stats_run.m(key("control", "passed")).value == 1
    plan = plan_next(week1, first)
    assert plan.decision.decision == "NEED_MORE_DATA" == stats_run.tags["fa.decision"]
    assert plan.decision.tested == () and plan.decision.collapsed == ()
    assert plan.decision.controls == ("zoo-balanced", "zoo-text-dominant", "zoo-vision-dominant")
    assert plan.decision.blocked == ("openclip-vit-b-32",) and plan.decision.trustworthy
    assert "gates changed" not in plan.changes[0].text and "controls, never counted" in plan.changes[0].text

    # the mission's counts are the decision's input, not a second computation: one more model needed stays NEED_MORE_DATA
    more_models = week1.model_copy(update={"gates": week1.gates.model_copy(update={"min_models_tested": 4})})
    assert plan_next(more_models, first).decision.decision == "NEED_MORE_DATA"


def test_failed_action_is_retried_once(week1, first):
    plan = plan_next(week1, first)
    assert plan.retried["T5"] == f"`{DISK_FULL}`" and plan.escalated == []
    assert plan.failures["T5"] == 1 and plan.cycle_tags()["fa.failures/T5"] == "1"
    entry = next(e for e in plan.actions() if e["id"] == "T5")
    assert entry["plan"] == "retry" and entry["attempt"] == 2


def test_a_missed_criterion_is_a_failure_with_the_observed_value_cited(week1, first):
    t7 = first.child("fa.action_id", "T7")
    reason = plan_next(week1, first).retried["T7"]
    # the threshold is cited from its logged param, not shown as a bare number in a code span (issue 15)
    assert f"2 [{t7.run_id}:placeholders_filled]" in reason and f">= 4 [{t7.run_id}:params/acceptance/placeholders_filled]" in reason


def test_failed_in_two_consecutive_cycles_is_escalated_with_its_error(week1, second):
    plan = plan_next(week1, second)
    assert plan.retried == {} and plan.cycle_number == 3
    (esc,) = plan.escalated
    t5 = second.child("fa.action_id", "T5")
    assert (esc.action_id, esc.owner, esc.failed_cycles, esc.evidence) == ("T5", "research_advisor", 2,
                                                                          f"{t5.run_id}:tags/fa.status")
    assert DISK_FULL in esc.error
    entry = next(e for e in json.loads(plan.to_json()) if e["id"] == "T5")
    assert entry["plan"] == "escalated" and DISK_FULL in entry["escalation"]["error"]
    assert plan.failures["T7"] == 0  # completed this time: the streak is broken
    assert plan.cycle_tags()["fa.escalated"] == "T5"


def test_an_alternative_blocked_too_is_dropped_and_random_init_is_not_counted(week1, cycle_logger):
    run = evidence.read_run(cycle_logger(week1, blocked=OPENCLIP_BLOCKED | {"openclip-vit-b-32-openai": "not cached either"},
                                         statuses={"T6": ("Blocked", "no model could be opened")},
                                         random_init=("zoo-vision-dominant",)))
    plan = plan_next(week1, run)
    assert [m.name for m in plan.mission.models] == ["zoo-text-dominant", "zoo-balanced", "zoo-vision-dominant"]
    assert plan.substitutions == {"openclip-vit-b-32": []}
    assert any("dropped, no untried alternative" in c.text and "openclip-vit-b-32-openai" in c.text for c in plan.changes)
    assert plan.decision.tested == () and plan.decision.decision == "NEED_MORE_DATA"
    assert "zoo-vision-dominant" in plan.decision.controls  # RANDOM-INIT: a control
    assert plan.failures["T6"] == 0 and "T6" not in plan.retried  # Blocked is not a failure


def test_changes_cite_evidence_that_verifies(week1, first):
    plan = plan_next(week1, first)
    run_ids = {first.run_id} | {r.run_id for a in first.children for r in [a, *a.children]}
    assert len(plan.changes) >= 3
    assert all(c.evidence and all(ref.split(":", 1)[0] in run_ids for ref in c.evidence) for c in plan.changes)
    findings, checked = check_text("\n".join(f"- {c}" for c in plan.changes))
    assert findings == [] and checked == 3  # the decision (a cited tag), T7's observed value and its logged threshold


def test_pending_actions_json_keeps_the_existing_fields(week1, first):
    start = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
    plan = plan_next(week1, first)
    entries = json.loads(plan.to_json(start))
    old = pending_actions(plan.mission, start)
    assert [e["id"] for e in entries] == [e["id"] for e in old] == ["T1", "T2", "T3", "T4", "T5", "T6", "T7"]
    for new, before in zip(entries, old):
        assert before.items() <= new.items()
    assert {e["id"]: e["plan"] for e in entries} == {"T1": "run", "T2": "run", "T3": "run", "T4": "run", "T5": "retry",
                                                     "T6": "run", "T7": "retry"}
    t3 = next(e for e in entries if e["id"] == "T3")
    assert t3["deadline"] == "2026-01-07T09:00+00:00" and t3["depends_on"] == ["T4"] and t3["owner"] == "ops_commander"
    assert json.loads(plan.to_json())[0]["deadline"] == "cycle start + 24 h"


def test_first_cycle_without_planner_tags_starts_the_count(week1, first):
    plan = plan_next(week1, first)
    assert plan.cycle_number == 2 and plan.previous_run_id == first.run_id
    assert plan.cycle_tags()["fa.cycle_number"] == "2" and plan.cycle_tags()["fa.escalated"] == "none"
