"""The quality officer: criteria with their evidence, tampered and uncited numbers found in a written report."""
from __future__ import annotations

import pytest

from agents.quality_officer import assess, check_criteria, uncited_numbers
from tasks import evidence
from tasks.evidence.cited import Cited


@pytest.fixture(scope="module")
def run() -> evidence.RunEvidence:
    exp = evidence.ensure_experiment("quality-officer")
    log = evidence.start_run(exp, "stats")
    log.metrics({"gates/models_tested": 3, "share": 0.0123456, "p": 3.2e-9})
    log.params({"threshold": 0.8})
    return evidence.read_run(log.run_id, with_children=False)


def _cite(c: Cited) -> str:
    return f"{c.formatted()} {c.citation}"


def _report(run: evidence.RunEvidence) -> str:
    return "\n".join([
        "# Cycle `20261121T113618Z-122888` for task T3",
        "",
        "Started `2026-11-21T11:36:21+00:00` on 14 Oct 2025 with torch 2.15.0.",
        "",
        f"- Models tested: {_cite(run.m('gates/models_tested'))}, threshold {_cite(run.p('threshold'))}.",
        f"- Image share {_cite(run.m('share'))}, p = {_cite(run.m('p'))}.",
        "",
        "```",
        "fusionaudit verify reports/week-one/handoff.md",
        "```",
    ]) + "\n"


def test_untouched_report_verifies(run, tmp_path):
    path = tmp_path / "handoff.md"
    path.write_text(_report(run))
    result = assess([path])
    assert result.verified and result.findings == [] and result.citations_checked == 4


def test_a_changed_number_names_the_line_and_the_logged_value(run, tmp_path):
    path = tmp_path / "handoff.md"
    path.write_text(_report(run).replace("Models tested: 3 ", "Models tested: 4 "))
    result = assess([path])
    assert not result.verified
    assert result.findings == [f"{path}:5: shows 4 but gates/models_tested in run {run.run_id} is 3"]


def test_an_uncited_number_is_flagged(run, tmp_path):
    path = tmp_path / "handoff.md"
    path.write_text(_report(run) + "An uncited claim: 42 models collapsed.\n")
    (finding,) = assess([path]).findings
    assert finding.startswith(f"{path}:11: number 42 has no citation")


@pytest.mark.parametrize("line", [
    "in a code span of user text `at least 10 works`", "task T3 on vit-b-32, layer_0 and CI95",
    "dated 2025-10-14 at 11:36, 14 Oct 2025, Oct 14, 2025", "- first step", "## Results",
    "torch 2.15.0 or v1.2", "(Li et al., 2023) in the `38th` ICML", "model `qwen2.5-vl`",
    "run 0123456789abcdef0123456789abcdef", "see [plot](results/layer_3.png) <a id=\"x1\"></a> <!-- a comment -->",
])
def test_not_measurements_are_not_flagged(line):
    assert uncited_numbers(line) == []


@pytest.mark.parametrize("line, number", [
    ("42 models", "42"), ("n=64 samples", "64"), ("p<0.05", "0.05"), ("**7** items", "7"), ("12 GB free", "12"),
    ("took 5s", "5s"), ("share of 80%", "80%"), ("between 0.2–0.7", "0.2–0.7"), ("2/3 of them", "2/3"),
    ("a 64-sample run", "64-sample"), ("d = −1.5", "−1.5"), ("1,234 rows", "1,234"),
    # no free pass any more (issue 15): code spans without words, headings, ordinals, "version", comments, hyphens
    ("in a code span `0.512`", "0.512"), ("code `n = 64`", "64"), ("## 2.1 Results", "2.1"), ("1. first step", "1."),
    ("version 3.1 of it", "3.1"), ("<!-- 12 -->", "12"), ("share-0.994", "share-0.994"), ("`99.4%`", "99.4%"),
])
def test_uncited_numbers_are_flagged(line, number):
    (finding,) = uncited_numbers(line)
    assert finding.problem.startswith(f"number {number.rstrip('.')} has no citation")


def test_every_criterion_carries_its_observed_evidence(week1, cycle_logger):
    cycle = evidence.read_run(cycle_logger(week1, metrics={"T5": {"bib_entries": 3}}))
    checks = check_criteria(week1, cycle)
    t5 = cycle.child("fa.action_id", "T5")
    bib = next(c for c in checks if c.metric == "bib_entries")
    assert (bib.passed, bib.observed, bib.required) == (False, 3, 10)
    assert bib.evidence.citation == f"[{t5.run_id}:bib_entries]"
    assert bib.required_evidence.citation == f"[{t5.run_id}:params/acceptance/bib_entries]"
    assert bib.markdown().startswith("FAIL: `at least 10 works in the library`: `bib_entries` = 3 [")
    assert all(c.evidence is not None for c in checks)
    assert len(checks) == sum(len(a.acceptance) for a in week1.actions)


def test_a_missing_file_is_a_finding_not_a_crash(tmp_path):
    result = assess([tmp_path / "nope.md"])
    assert not result.verified and "cannot be read" in result.findings[0]
