"""Checklist items evaluated on logged evidence: all runs must pass, the worst value is cited, missing evidence fails."""
from tasks.evidence import RunEvidence
from tasks.evidence.cited import Cited
from tasks.training.checklist import evaluate
from tasks.training.mission import ChecklistItem


def _run(run_id: str, **metrics) -> RunEvidence:
    return RunEvidence(run_id, run_id, "FINISHED", 0, {}, {}, {k.replace("__", "/"): Cited(v, run_id, k.replace("__", "/"))
                                                             for k, v in metrics.items()})


def test_every_run_must_pass_and_the_worst_value_is_the_evidence():
    item = ChecklistItem(id="loss-drops", phase="during", description="loss drops", metric="loss/drop", op=">", value=0)
    runs = {"a": _run("a" * 32, loss__drop=0.4), "b": _run("b" * 32, loss__drop=0.1)}
    [ok] = evaluate((item,), runs, None, [])
    assert ok.passed and ok.worst.value == 0.1 and ok.worst.run_id == "b" * 32
    runs["c"] = _run("c" * 32, loss__drop=-0.2)
    runs["d"] = _run("d" * 32)  # nothing logged: no evidence, no pass
    [bad] = evaluate((item,), runs, None, [])
    assert not bad.passed and bad.passed_count == 2 and bad.failing == ["c", "d"] and bad.worst.value == -0.2


def test_variant_scope_reads_the_comparison_run():
    item = ChecklistItem(id="n", phase="after", description="paired", scope="variants", metric="share/n", op=">=", value=8)
    compare = _run("e" * 32, **{"v1__share__n": 48, "v2__share__n": 4})
    [r] = evaluate((item,), {}, compare, ["v1", "v2"])
    assert not r.passed and r.failing == ["v2"] and r.worst.key == "v2/share/n"
