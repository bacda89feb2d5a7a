"""Action reports read back from a logged cycle: what ran, on which models and data, artifacts, cited numbers, duration."""
from __future__ import annotations

import pytest

from agents.ops_commander import NOT_RUN, action_report, cycle_reports
from agents.quality_officer import check_text
from tasks import evidence


@pytest.fixture(scope="module")
def cycle(week1, cycle_logger) -> evidence.RunEvidence:
    """openclip Blocked; T7 misses a criterion; T6 has no run; no action logged a duration_s metric."""
    return evidence.read_run(cycle_logger(week1, blocked={"openclip-vit-b-32": "no weights offline"}, skip=("T6",),
                                          metrics={"T7": {"placeholders_filled": 1}}, durations=False))


def test_diagnostics_report_names_models_data_artifacts_and_cited_metrics(week1, cycle):
    report = action_report(week1, week1.action("T4"), cycle)
    run = cycle.child("fa.action_id", "T4")
    assert (report.run_id, report.stage, report.status, report.final_status) == (run.run_id, "diagnostics", "Completed", "Completed")
    assert [m.name for m in report.models] == ["zoo-text-dominant", "zoo-balanced", "zoo-vision-dominant"]
    first = report.models[0]
    assert first.duration.cited.citation == f"[{first.run_id}:duration_s]" and first.duration.seconds == 0.75
    assert first.metrics["samples_scored"].value == 32 and "layer/0/attn_visual_share" not in first.metrics
    assert report.data.kind.value == "synthetic" and report.data.hash.value == "abc123def456"
    assert report.data.samples.value == 32 and report.data.samples.citation == f"[{run.run_id}:dataset_samples]"
    assert report.data.seed.citation == f"[{cycle.run_id}:params/seed]"
    assert {str(a) for a in report.artifacts} == {f"{run.run_id}/logs/notes.txt", f"{first.run_id}/tables/per_sample.csv"}
    assert report.metrics["models_diagnosed"].citation == f"[{run.run_id}:models_diagnosed]"
    assert set(report.metrics) == {"models_diagnosed", "samples_scored_min", "plots_per_model_min", "dataset_samples"}


def test_duration_falls_back_to_the_run_times_when_no_metric_was_logged(week1, cycle):
    report = action_report(week1, week1.action("T2"), cycle)
    assert report.duration.source == "run start/end times" and report.duration.cited is None
    assert 0 <= report.duration.seconds < 60
    assert report.data.kind is None  # the environment check used no dataset


def test_blocked_model_and_missed_criterion_are_reported(week1, cycle):
    t1 = action_report(week1, week1.action("T1"), cycle)
    blocked = next(m for m in t1.models if m.name == "openclip-vit-b-32")
    assert (blocked.status, blocked.reason) == ("Blocked", "no weights offline")
    t7 = action_report(week1, week1.action("T7"), cycle)
    assert (t7.status, t7.final_status) == ("Completed", "Failed")
    missed = next(c for c in t7.criteria if not c.passed)
    assert missed.evidence.value == 1 and missed.evidence.run_id == t7.run_id


def test_an_action_without_a_run_is_not_run(week1, cycle):
    report = action_report(week1, week1.action("T6"), cycle)
    assert (report.run_id, report.status, report.models, report.artifacts) == (None, NOT_RUN, [], [])


def test_cycle_reports_follow_priority_and_their_markdown_verifies(week1, cycle):
    reports = cycle_reports(week1, cycle)
    assert [r.action_id for r in reports] == ["T1", "T2", "T3", "T4", "T5", "T6", "T7"]
    findings, checked = check_text("\n".join(r.to_markdown() for r in reports))
    assert findings == [] and checked > 20
