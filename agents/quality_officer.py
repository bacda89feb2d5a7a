"""Quality & Safety Officer: acceptance criteria checked against evidence, citations re-read from MLflow.

A report passes when every citation resolves to the logged value it prints
(``tasks.evidence.verify_markdown``) and no measured number stands without a
citation (``uncited_numbers``, the rule below).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tasks import evidence
from tasks.acceptance import CriterionCheck, check_criteria, final_status  # noqa: F401 - the officer's checks
from tasks.evidence.cited import CITATION, CLAIM_WORDS, from_footnotes




def verify_files(paths: list[Path]) -> tuple[list[str], int]:
    """Findings (file: line: problem) over every Markdown report, and the number of citations checked."""
    findings: list[str] = []
    checked = 0
    for path in paths:
        found, n = check_text(path.read_text(encoding="utf-8"))  # footnotes resolved, claims and words checked
        checked += n
        findings += [f"{path.name}: line {f.line}: {f.problem}" for f in found]
    return findings, checked


# ------------------------------------------------------------------ uncited claims
#
# THE RULE. A number in a report is a claim and needs a citation right after it
# (a footnote ``0.993[^e1]``, or inline ``0.993 [run_id:key]``), unless it is
# one of these, which cannot carry a claim:
#   - part of an identifier: a token that mixes letters with digits (T3,
#     vit-b-32, layer_0, CI95, 38th, fp16) or contains ``_``/``#``; a
#     32-hex-digit run id is an identifier too;
#   - a date or time: 2025-10-14, 14/10/2025, 11:36, 11:36:21, "14 Oct 2025",
#     "Oct 14, 2025", "October 2025", and the year of an author-year
#     reference ("Li et al., 2023");
#   - a version string of three or more dotted parts (3.8.8, 2.15.0rc1) or
#     with a ``v`` prefix (v1.2) — the formatter never prints either;
#   - a link or image target ``](...)``, a bare URL, or an HTML tag's
#     attributes (none of them is shown as text);
#   - text inside an inline code span that holds words (user-supplied
#     titles, reasons, paths): a code span that is only a number, a number
#     with a unit, or a one-letter name with a number (`0.512`, `12 GB`,
#     `n = 64`) is checked like prose.
# Headings, list ordinals, HTML comments, fenced code blocks and the text
# after "version" get no pass. Everything else that contains a digit and no
# letters, a number with a unit suffix (12 GB, 5s, 2x, 80%), and a number
# glued to a word with a hyphen ("64-sample", "share-0.994") is flagged.
#
# A verdict word (``cited.CLAIM_WORDS``: the decision, a status, a balance
# call, yes/no) in bold, alone in a table cell, or in a heading is a claim too.

_MASKS = [
    re.compile(r"\]\([^)]*\)"),                                  # link / image targets
    re.compile(r"\b(?:https?|ftp|file|s3|gs)://\S+"),            # bare URLs
    re.compile(r"</?[A-Za-z][^>]*>"),                            # HTML tags' attributes (<a id="x1">)
    re.compile(r"\[\^[^\]]+\]"),                                 # footnote references
]
_CODE_SPAN = re.compile(r"(`+)((?:(?!\1).)+?)\1")
_WORDY = re.compile(r"[A-Za-z]{2}")
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_WORD_DATES = [
    re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}(?:\s+\d{{4}})?\b"),   # 14 Oct 2025
    re.compile(rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b"),      # Oct 14, 2025
    re.compile(rf"\b{_MONTH}\s+\d{{4}}\b"),                                     # October 2025
    re.compile(r"\bet al\.?,?\s+\d{4}[a-z]?\b"),                                # Li et al., 2023
]
# Token boundaries: whitespace and punctuation that never sits inside a number, an identifier or a date.
_SPLIT = re.compile(r"[\s=<>()\[\]{}|;\"'*!?~^$\\±≤≥≈`]+|,(?=\s|$)|:(?=\s|$)")
_NUMBER = re.compile(r"[-−+]?(?:\d{1,3}(?:,\d{3})+|\d+)?\.?\d+(?:[eE][-+]?\d+)?")
_UNIT = re.compile(r"(?:%|x|×|[kKMGT]i?B|B|[mµnu]?s|min|h|k|K|M|pp|px|fps|Hz)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?")
_VERSION = re.compile(r"v\d+(?:\.\d+)*\S*|\d+(?:\.\d+){2,}[0-9A-Za-z.+\-]*", re.IGNORECASE)
_HEX_ID = re.compile(r"[0-9a-f]{32}")
_QUANTITY_WORD = re.compile(r"\d+(?:\.\d+)?-[A-Za-z]+")  # 64-sample, 3-layer
_DECIMAL_PART = re.compile(r"(?:^|[-_])[-+]?\d*\.\d+(?:[-_]|$)")  # share-0.994, p_0.05
_BOLD = re.compile(r"\*\*([^*\n]+)\*\*")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s")
_UPPER_CLAIMS = {w for w in CLAIM_WORDS if w.isupper()}


def uncited_numbers(text: str) -> list[evidence.Finding]:
    """Numbers and verdict words that carry no citation, by the rule above (line numbers are 1-based)."""
    findings = []
    for lineno, line in enumerate(text.splitlines(), 1):
        masked = _mask_line(line)
        for token in _tokens(masked):
            if _is_claim(token):
                findings.append(evidence.Finding(lineno, f"number {token} has no citation: follow it with its "
                                                         "evidence (a footnote), or write a non-measurement in words",
                                                 line))
        findings += [evidence.Finding(lineno, f"claim {word!r} has no citation: render it from its logged tag or "
                                              "metric with the cite filter", line) for word in _uncited_words(masked)]
    return findings


def _blank(m: re.Match) -> str:
    return " " * len(m.group())


def _code_span(m: re.Match) -> str:
    """Words in a code span are text (identifiers, user input); a span without words is checked as prose."""
    return _blank(m) if _WORDY.search(m.group(2)) else " " * len(m.group(1)) + m.group(2) + " " * len(m.group(1))


def _mask_line(line: str) -> str:
    line = _CODE_SPAN.sub(_code_span, line)
    for pattern in _MASKS:
        line = pattern.sub(_blank, line)
    # a citation and the claim it follows are checked by verify_markdown, with the same notion of "follows"
    for cm in reversed(list(CITATION.finditer(line))):
        before = evidence.claim_before(line, cm.start())
        start = before[1][0] if before else cm.start()
        line = line[:start] + " " * (cm.end() - start) + line[cm.end():]
    for pattern in _WORD_DATES:
        line = pattern.sub(_blank, line)
    return line


def _uncited_words(masked: str) -> list[str]:
    words = [m.group(1).strip() for m in _BOLD.finditer(masked)]
    if masked.lstrip().startswith("|"):
        words += [cell.strip() for cell in masked.strip().strip("|").split("|")]
    if _HEADING.match(masked):
        words += [w for w in re.findall(r"[A-Z_]{2,}", masked) if w in _UPPER_CLAIMS]
    return [w for w in dict.fromkeys(words) if w in CLAIM_WORDS]


def _tokens(line: str) -> list[str]:
    out = []
    for raw in _SPLIT.split(line):
        token = raw.strip(".,:/")  # sentence punctuation around a token
        if token and any(ch.isdigit() for ch in token):
            out.append(token)
    return out


def _is_claim(token: str) -> bool:
    if _DATE.fullmatch(token) or _VERSION.fullmatch(token) or _HEX_ID.fullmatch(token.lower()):
        return False
    number = _NUMBER.match(token)
    if number and number.end() == len(token):
        return True
    if number and _UNIT.fullmatch(token[number.end():].strip()):
        return True
    if _QUANTITY_WORD.fullmatch(token) or _DECIMAL_PART.search(token):
        return True
    if "_" in token or "#" in token:
        return False
    # ranges and fractions (0.2–0.7, 2/3) state numbers; anything with letters left is an identifier
    return not any(ch.isalpha() for ch in token)


# ------------------------------------------------------------------ assessment


@dataclass(frozen=True)
class Assessment:
    verified: bool
    findings: list[str] = field(default_factory=list)  # "file:line: problem", mismatches with the logged value
    citations_checked: int = 0


def check_text(text: str, runs: dict | None = None) -> tuple[list[evidence.Finding], int]:
    """Footnote problems, citation mismatches (re-read from MLflow) and uncited claims of one Markdown text.

    Returns (findings, citations checked). Footnotes are resolved to inline
    citations first, keeping line numbers, so one checker serves both forms.
    ``runs``: the runs already read (as in ``verify_markdown``).
    """
    inline, problems = from_footnotes(text)
    found, checked = evidence.verify_markdown(inline, runs)
    citation_problems = [f for f in found if not f.problem.endswith("has no citation")]
    footnote_problems = [evidence.Finding(p.line, p.problem, p.text) for p in problems]
    return sorted(footnote_problems + citation_problems + uncited_numbers(inline), key=lambda f: f.line), checked


def assess(paths: list[Path]) -> Assessment:
    """Every report re-checked against the evidence store: ``file:line: problem`` per finding.

    A changed number reads ``report.md:12: shows 4 but gates/models_tested in run <id> is 3`` (the expected
    value is the logged one); an uncited number reads ``report.md:14: number 42 has no citation: ...``; a report
    that cites nothing (an empty file included) is a finding: there is nothing in it to verify.
    """
    findings: list[str] = []
    checked = 0
    runs: dict = {}  # each cited run read once for all the reports
    for path in map(Path, paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            findings.append(f"{path}:0: cannot be read ({type(exc).__name__}: {exc}): pass an existing UTF-8 report")
            continue
        found, n = check_text(text, runs)
        checked += n
        findings += [f"{path}:{f.line}: {f.problem}" for f in found]
        if n == 0:
            findings.append(f"{path}:0: no citations: a report verifies only against the evidence it cites")
    return Assessment(verified=not findings and checked > 0, findings=findings, citations_checked=checked)
