"""Tamper suite: a handoff rendered from a logged cycle verifies untouched; every way of faking it is a finding.

The reports are rendered by the real environment (``tasks.reporting.views``) from a
cycle logged to the session's SQLite MLflow store; each case edits the
rendered handoff the way a hostile or careless editor would and checks that
``assess`` (what ``fusionaudit verify`` and the quality officer run) names the
edited line.
"""
from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from agents.quality_officer import assess
from flows.cli import app
from tasks import evidence
from tasks.reporting import rendering
from tasks.reporting import views as reporting

FAKE_RUN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def reports(week1, cycle_logger, tmp_path_factory) -> dict[str, str]:
    # the three zoo models logged as external subjects (not controls), so the handoff carries a GO decision,
    # a gate table with every column, and verdict words for each model: every kind of claim there is to tamper with
    subjects = week1.model_copy(update={"models": tuple(m.model_copy(update={"calibration": False}) for m in week1.models)})
    cycle_id = cycle_logger(subjects, blocked={"openclip-vit-b-32": "weights not found"})
    view = reporting.cycle_view(subjects, evidence.read_run(cycle_id))
    paths = reporting.render_reports(rendering.make_env(), view, tmp_path_factory.mktemp("reports"))
    return {p.name: p.read_text(encoding="utf-8") for p in paths}


@pytest.fixture(scope="module")
def handoff(reports) -> str:
    return reports["execution_progress_update.md"]


@pytest.fixture(scope="module")
def model_page(reports) -> str:
    """The text-dominant model's page: its verdict, call and dominant modality as cited words."""
    return reports["zoo-text-dominant_diagnostic_results.md"]


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _ref(text: str, claim_regex: str) -> tuple[str, str, str]:
    """(the claim, its footnote label, the line) of the first claim matching ``claim_regex`` followed by a footnote."""
    m = re.search(rf"(?P<claim>{claim_regex})\[\^(?P<label>e\d+)\]", text)
    assert m, claim_regex
    line = text[:m.start()].count("\n") + 1
    return m.group("claim"), m.group("label"), str(line)


def _sub_once(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _swap_claim(regex: str, new: str):
    """Rewrite the first claim matching ``regex`` (followed by its footnote) where it stands (a label is reused)."""
    def tamper(text: str) -> tuple[str, int]:
        m = re.search(rf"(?P<claim>{regex})(?=\[\^e\d+\])", text)
        assert m, regex
        return text[:m.start()] + new + text[m.end():], text[:m.start()].count("\n") + 1
    return tamper


def _definition(label_regex: str, edit, named_at_definition: bool = False):
    def tamper(text: str) -> tuple[str, int]:
        m = re.search(rf"^\[\^({label_regex})\]: .*$", text, re.MULTILINE)
        line = text[:m.start()].count("\n") + 1
        new = edit(m.group())
        if not named_at_definition:  # a definition removed or re-pointed is reported where a claim cites it
            line = _line_of(text, f"[^{m.group(1)}]")
        return text[:m.start()] + new + text[m.end():], line
    return tamper


def _append(extra: str, offset: int = 0):
    def tamper(text: str) -> tuple[str, int]:
        head, _, notes = text.partition("\n[^e1]:")
        return head.rstrip("\n") + "\n\n" + extra + "\n\n[^e1]:" + notes, head.rstrip("\n").count("\n") + 3 + offset
    return tamper


def _in_line(needle: str, old: str, new: str):
    def tamper(text: str) -> tuple[str, int]:
        line_no = _line_of(text, needle)
        lines = text.split("\n")
        assert old in lines[line_no - 1], (old, lines[line_no - 1])
        lines[line_no - 1] = lines[line_no - 1].replace(old, new, 1)
        return "\n".join(lines), line_no
    return tamper


def _drop_first_ref(needle: str):
    def tamper(text: str) -> tuple[str, int]:
        line_no = _line_of(text, needle)
        lines = text.split("\n")
        lines[line_no - 1] = re.sub(r"\[\^e\d+\]", "", lines[line_no - 1], count=1)
        return "\n".join(lines), line_no
    return tamper


def _swap_refs(text: str) -> tuple[str, int]:
    """Move a citation onto a different claim: two footnotes of one row trade places."""
    line_no = _line_of(text, "| `zoo-text-dominant` | 0.")
    lines = text.split("\n")
    labels = re.findall(r"\[\^(e\d+)\]", lines[line_no - 1])
    a, b = labels[0], labels[2]  # the imbalance and the p-value
    lines[line_no - 1] = lines[line_no - 1].replace(f"[^{a}]", "[^TMP]").replace(f"[^{b}]", f"[^{a}]").replace("[^TMP]", f"[^{b}]")
    return "\n".join(lines), line_no


CASES = {
    # numbers: the formatter's exact text, nothing coarser, rescaled or reformatted
    "changed digit": _swap_claim(r"0\.98\d", "0.911"),
    "coarser: 0.982 -> 1": _swap_claim(r"0\.98\d", "1"),
    "coarser: two digits": _swap_claim(r"0\.98\d", "0.98"),
    "rescaled to a percentage": _swap_claim(r"0\.98\d", "98.2%"),
    "sign flipped": _swap_claim(r"0\.98\d", "-0.982"),
    "CI low rounded to 0": _swap_claim(r"0\.01\d", "0"),
    "p-value rounded to 0": _swap_claim(r"\d\.\d\de-\d\d", "0"),
    "p-value reformatted": _swap_claim(r"\d\.\d\de-\d\d", "2.2e-49"),
    "count written as a float": _swap_claim(r"(?<=External models tested: )3", "3.0"),
    "count changed": _swap_claim(r"(?<=External models tested: )3", "4"),
    "number with thousands separator": _swap_claim(r"1\.250", "1,250"),
    # words: the decision, flags, statuses, verdicts, balance calls
    "decision in the heading GO -> PIVOT": _swap_claim(r"\*\*GO\*\*", "**PIVOT**"),
    "decision in the rule line": _in_line("Rule that fired", "**GO**", "**NEED_MORE_DATA**"),
    "collapse column yes -> no": _swap_claim(r"\*\*yes\*\*(?=\[\^e\d+\] \|\n)", "**no**"),
    "threshold column no -> yes": _swap_claim(r"(?<=\| )\*\*no\*\*", "**yes**"),
    "action status Completed -> Blocked": _swap_claim(r"\*\*Completed\*\*", "**Blocked**"),
    "blocked model shown Completed": _in_line("is **Blocked**", "**Blocked**", "**Completed**"),
    "citation moved onto a different claim": _swap_refs,
    # footnotes
    "footnote definition removed": _definition(r"e3", lambda line: ""),
    "footnote re-pointed to another key": _definition(r"e3", lambda line: re.sub(r"key \S+", "key gates/models_tested", line)),
    "footnote re-pointed to an unknown run": _definition(r"e3", lambda line: re.sub(r"run [0-9a-f]{32}", f"run {FAKE_RUN}", line)),
    "footnote definition malformed": _definition(r"e3", lambda line: line.split(":")[0] + ": trust me",
                                                named_at_definition=True),
    "footnote reference to an undefined label": _in_line("Rule that fired", "**GO**[^e1]", "**GO**[^e999]"),
    "footnote reference dropped": _drop_first_ref("| `zoo-text-dominant` | 0."),
    "word footnote on a number": _in_line("External models tested: ", "3[^", "3[^e1]x[^"),
    # uncited numbers and words through what used to be exempt
    "uncited number in prose": _append("An uncited claim: 42 models collapsed."),
    "number in a code span": _append("Imbalance of the strongest model: `0.512`."),
    "number in a heading": _append("## 3 models collapsed"),
    "list ordinal as a number": _append("1. of the models collapsed"),
    "number after the word version": _append("Imbalance version 0.99 of the run."),
    "number glued with a hyphen": _append("The share-0.994 model."),
    "number in an HTML comment": _append("<!-- imbalance 0.994 -->"),
    "number in a fenced block": _append("```\nimbalance 0.994\n```", offset=1),
    "uncited bold decision": _append("The team recommends **PIVOT**."),
    "uncited status in a table cell": _append("| T9 | Completed |\n|---|---|"),
}


# verdict words shown on a model's page (the handoff links the pages)
PAGE_CASES = {
    "verdict label COLLAPSE -> no collapse shown": _swap_claim(r"\*\*COLLAPSE\*\*", "**no collapse shown**"),
    "balance call collapsed -> balanced": _swap_claim(r"\*\*collapsed\*\*", "**balanced**"),
    "dominant modality text -> image": _swap_claim(r"\*\*text\*\*", "**image**"),
}


@pytest.mark.parametrize("case", list(PAGE_CASES))
def test_tampering_a_model_page_is_caught_and_names_the_line(model_page, case, tmp_path):
    text, line = PAGE_CASES[case](model_page)
    path = tmp_path / "zoo-text-dominant_diagnostic_results.md"
    path.write_text(text, encoding="utf-8")
    result = assess([path])
    assert not result.verified, case
    assert any(f.startswith(f"{path}:{line}:") for f in result.findings), (case, line, result.findings)


@pytest.mark.parametrize("case", list(CASES))
def test_tampering_is_caught_and_names_the_line(handoff, case, tmp_path):
    text, line = CASES[case](handoff)
    assert text != handoff
    path = tmp_path / "execution_progress_update.md"
    path.write_text(text, encoding="utf-8")
    result = assess([path])
    assert not result.verified, case
    assert any(f.startswith(f"{path}:{line}:") for f in result.findings), (case, line, result.findings)


def test_the_suite_is_at_least_25_cases():
    assert len(CASES) + len(PAGE_CASES) >= 25


def test_untouched_handoff_verifies_with_footnotes(handoff, tmp_path):
    path = tmp_path / "execution_progress_update.md"
    path.write_text(handoff, encoding="utf-8")
    result = assess([path])
    assert result.verified and result.findings == [], result.findings
    assert "[^e1]:" in handoff and not re.search(r"\[[0-9a-f]{32}:", handoff)  # no inline citations left
    # one footnote per distinct (run, key), reused: fewer definitions than references, none duplicated
    defs = re.findall(r"^\[\^(e\d+)\]: run ([0-9a-f]{32}), key (\S+)$", handoff, re.MULTILINE)
    refs = len(re.findall(r"\[\^e\d+\]", handoff)) - len(defs)
    assert len(defs) == len({(run, key) for _, run, key in defs}) < refs == result.citations_checked


def test_verify_cli_passes_the_untouched_report_and_fails_a_tampered_one(handoff, tmp_path):
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text(handoff, encoding="utf-8")
    bad.write_text(CASES["coarser: 0.982 -> 1"](handoff)[0], encoding="utf-8")
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(good)])
    assert ok.exit_code == 0 and "VERIFIED" in ok.stdout
    failed = runner.invoke(app, ["verify", str(bad)])
    assert failed.exit_code == 1 and "NOT VERIFIED" in failed.stdout and "shows 1 but" in failed.stdout


@pytest.mark.parametrize("content", ["", "# A report\n\nNothing measured here.\n"])
def test_a_report_without_citations_is_not_verified(content, tmp_path):
    path = tmp_path / "empty.md"
    path.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(app, ["verify", str(path)])
    assert result.exit_code == 1 and "NOT VERIFIED" in result.stdout and "no citations" in result.stdout
