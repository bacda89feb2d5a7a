"""Evidence logging and verification against a real MLflow SQLite store."""
import math

import pytest

from tasks import evidence
from tasks.evidence.cited import Cited, expected_claims, format_number


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


@pytest.mark.parametrize("known_name", [True, False])
def test_a_status_in_the_run_name_shows_in_the_runs_table(known_name):
    started = evidence.start_run(evidence.ensure_experiment("test-evidence-kind"), "open clip-vit-b-32")
    run = started if known_name else evidence.RunLog(started.run_id)  # a resumed run's name is read from MLflow
    run.tags(run.named("Blocked"))
    run.tags(evidence.RunLog(run.run_id).named("Blocked"))  # a retry does not stack it
    assert evidence.client().get_run(run.run_id).info.run_name == "open clip-vit-b-32 · Blocked"


def test_one_write_logs_metrics_params_and_tags_past_mlflows_batch_limits():
    run = evidence.start_run(evidence.ensure_experiment("test-evidence-kind"), "many")
    run.log(metrics={f"m{i}": i for i in range(1234)}, params={f"p{i}": i for i in range(150)},
            tags={f"t{i}": i for i in range(120)})
    data = evidence.client().get_run(run.run_id).data
    assert len(data.metrics) == 1234 and len(data.params) == 150 and data.tags["t119"] == "119"


def _tree(log_root: bool):
    """A cycle with two actions, one of them with two model runs; ``log_root`` False logs it as before runs carried
    their tree's root (what a store written by an older version holds)."""
    exp = evidence.ensure_experiment("test-evidence-tree")
    root = evidence.start_run(exp, "cycle")
    start = (lambda name, parent: evidence.start_run(exp, name, parent)) if log_root else (
        lambda name, parent: evidence.RunLog(evidence.client().create_run(
            exp, run_name=name, tags={evidence.PARENT_TAG: parent}).info.run_id))
    if not log_root:
        evidence.client().delete_tag(root.run_id, evidence.ROOT_TAG)
    first = start("T1", root.run_id)
    start("T2", root.run_id)
    for model in ("a", "b"):
        start(model, first.run_id).metrics({"n": 3})
    return root


@pytest.mark.parametrize("log_root", [True, False])
def test_a_tree_reads_back_whole_with_or_without_root_tags(log_root):
    root = _tree(log_root)
    tree = evidence.read_run(root.run_id)
    assert [c.name for c in tree.children] == ["T1", "T2"]
    assert [g.name for g in tree.children[0].children] == ["a", "b"] and tree.children[0].children[0].m("n").value == 3
    assert tree.children[1].children == []
    sub = evidence.read_run(tree.children[0].run_id)  # a subtree reads from the same search
    assert [g.name for g in sub.children] == ["a", "b"]
    assert evidence.read_run(root.run_id, with_children=False).children == []


def test_documents_checked_together_read_each_cited_run_once(run):
    runs: dict = {}
    assert evidence.verify_markdown(f"n = 64 [{run.run_id}:n]", runs)[0] == [] and list(runs) == [run.run_id]
    runs[run.run_id].metrics["n"] = Cited(65, run.run_id, "n")  # the second document sees the run as first read
    assert "shows 64" in evidence.verify_markdown(f"n = 64 [{run.run_id}:n]", runs)[0][0].problem
