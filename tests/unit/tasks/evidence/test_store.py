"""Evidence logging and verification against a real MLflow SQLite store."""
import math

import pytest

from tasks import evidence
from tasks.evidence.cited import expected_claims, format_number


@pytest.fixture(scope="module")
def run():
    exp = evidence.ensure_experiment("test-evidence")
    run = evidence.start_run(exp, "r")
    run.metrics({"share": 0.0123456, "n": 64, "p": 3.2e-9, "big": 12.5})
    run.params({"threshold": 0.8})
    return run


def test_read_back_values_carry_their_citation(run):
    ev = evidence.read_run(run.run_id)
    assert ev.m("n").value == 64 and ev.m("n").citation == f"[{run.run_id}:n]"
    assert ev.p("threshold").value == 0.8 and ev.p("threshold").citation == f"[{run.run_id}:params/threshold]"


def test_correct_citations_verify(run):
    r = run.run_id
    text = f"share 0.012 [{r}:share], n = 64 [{r}:n], p = 3.20e-09 [{r}:p], thr {format_number(0.8)} [{r}:params/threshold]; model `vit-b-32` on `2026-01-01`\n"
    findings, checked = evidence.verify_markdown(text)
    assert findings == [] and checked == 4


@pytest.mark.parametrize("line, problem", [
    ("share 0.021 [{r}:share]", "shows 0.021"),
    ("n = 65 [{r}:n]", "shows 65"),
    ("value 1.0 [{r}:missing]", "missing not logged"),
    ("ten samples: 10", "number 10 has no citation"),
    ("orphan [{r}:n]", "follows no number"),
    ("bad run 1 [0123456789abcdef0123456789abcdef:n]", "not found"),
])
def test_mismatches_and_uncited_numbers_are_findings(run, line, problem):
    findings, _ = evidence.verify_markdown(line.format(r=run.run_id))
    assert len(findings) == 1 and problem in findings[0].problem


def test_number_format_is_shared_by_reports_and_verifier():
    assert format_number(64.0) == "64" and format_number(0.0123456) == "0.012"
    assert format_number(3.2e-9) == "3.20e-09" and format_number(float("nan")) == "nan"
    # the verifier compares the shown text with the formatter's output: no tolerance, no rescaling
    assert expected_claims(0.0123456) == {"0.012"} and expected_claims(math.nan) == {"nan"}
    assert expected_claims(1) == {"1", "yes", "COLLAPSE", "pass", "PASS", "robust"} and expected_claims("GO") == {"GO"}


def test_experiments_open_on_their_runs_not_the_genai_overview():
    exp = evidence.ensure_experiment("test-evidence-kind")
    assert evidence.client().get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_status_in_the_run_name_shows_in_the_runs_table():
    run = evidence.start_run(evidence.ensure_experiment("test-evidence-kind"), "open clip-vit-b-32")
    run.mark_in_name("Blocked")
    run.mark_in_name("Blocked")  # a retry does not stack it
    assert evidence.client().get_run(run.run_id).info.run_name == "open clip-vit-b-32 · Blocked"
