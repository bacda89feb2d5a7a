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


def verify_files(paths: list[Path]) -> tuple[list[str], int]:
    """Findings (file: line: problem) over every Markdown report, and the number of citations checked."""
    findings: list[str] = []
    checked = 0
    for path in paths:
        found, n = evidence.verify_markdown(path.read_text(encoding="utf-8"))
        checked += n
        findings += [f"{path.name}: {f}" for f in found]
    return findings, checked


# ------------------------------------------------------------------ uncited numbers
#
# THE RULE. A number in a report is a claim and needs a citation ``[run_id:key]``
# right after it, unless it is one of these, which are not measurements:
#   - inside an inline code span (`...`), a fenced code block (``` or ~~~),
#     an HTML comment or tag, a link or image target ``](...)``, or a URL;
#   - part of an identifier: a token that mixes letters with digits (T3,
#     vit-b-32, layer_0, CI95, 38th, fp16) or contains ``_``/``#``; a
#     32-hex-digit run id is an identifier too;
#   - a date or time: 2025-10-14, 14/10/2025, 11:36, 11:36:21, "14 Oct 2025",
#     "Oct 14, 2025", "October 2025", and the year of an author-year
#     reference ("Li et al., 2023");
#   - a list ordinal at the start of a line (``1.`` / ``1)``) or the section
#     number at the start of a heading (``## 2.1 Results``);
#   - a version string: three or more dotted parts (3.8.8, 2.15.0rc1), a
#     ``v`` prefix (v1.2), or a number right after the word "version".
# Everything else that contains a digit and no letters — and a number with a
# unit suffix (12 GB, 5s, 2x, 80%) — is flagged. Numbers glued to a word with
# a hyphen ("64-sample") are flagged too: they state a quantity.

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_MASKS = [
    re.compile(r"<!--.*?-->"),                                   # HTML comments (single line)
    re.compile(r"(`+)(?:(?!\1).)+?\1"),                          # inline code spans, any backtick run
    re.compile(r"\]\([^)]*\)"),                                  # link / image targets
    re.compile(r"^\s*\[[^\]]+\]:\s*\S+.*$"),                     # reference-style link definitions
    re.compile(r"\b(?:https?|ftp|file|s3|gs)://\S+"),            # bare URLs
    re.compile(r"</?[A-Za-z][^>]*>"),                            # HTML tags (<a id="x1">)
    re.compile(r"\[\^[^\]]+\]"),                                 # footnote references
]
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_WORD_DATES = [
    re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}(?:\s+\d{{4}})?\b"),   # 14 Oct 2025
    re.compile(rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b"),      # Oct 14, 2025
    re.compile(rf"\b{_MONTH}\s+\d{{4}}\b"),                                     # October 2025
    re.compile(r"\bet al\.?,?\s+\d{4}[a-z]?\b"),                                # Li et al., 2023
    re.compile(r"\bversion\s+\d+(?:\.\d+)*\b", re.IGNORECASE),                  # version 2.1
]
_LEADING_ORDINAL = re.compile(r"^(\s*(?:[-*+]\s+)?)\d+[.)](?=\s)")
_HEADING_NUMBER = re.compile(r"^(\s{0,3}#{1,6}\s+)\d+(?:\.\d+)*\.?(?=\s)")
# Token boundaries: whitespace and punctuation that never sits inside a number, an identifier or a date.
_SPLIT = re.compile(r"[\s=<>()\[\]{}|;\"'*!?~^$\\±≤≥≈]+|,(?=\s|$)|:(?=\s|$)")
_NUMBER = re.compile(r"[-−+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_UNIT = re.compile(r"(?:%|x|×|[kKMGT]i?B|B|[mµnu]?s|min|h|k|K|M|pp|px|fps|Hz)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?")
_VERSION = re.compile(r"v\d+(?:\.\d+)*\S*|\d+(?:\.\d+){2,}[0-9A-Za-z.+\-]*", re.IGNORECASE)
_HEX_ID = re.compile(r"[0-9a-f]{32}")
_QUANTITY_WORD = re.compile(r"\d+(?:\.\d+)?-[A-Za-z]+")  # 64-sample, 3-layer


def uncited_numbers(text: str) -> list[evidence.Finding]:
    """Numbers that carry no citation, by the rule in this module's comment (line numbers are 1-based)."""
    findings = []
    for lineno, line in _prose_lines(text):
        for token in _tokens(_mask_line(line)):
            if _is_claim(token):
                findings.append(evidence.Finding(lineno, f"number {token} has no citation: follow it with its "
                                                         "evidence [run_id:key], or put a non-measurement in a code span",
                                                 line))
    return findings


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = None
    for lineno, line in enumerate(text.splitlines(), 1):
        fence = _FENCE.match(line)
        if fence:
            fenced = None if fenced == fence.group(1) else (fenced or fence.group(1))
            continue
        if fenced is None:
            yield lineno, line


def _blank(m: re.Match) -> str:
    return " " * len(m.group())


def _mask_line(line: str) -> str:
    for pattern in _MASKS:
        line = pattern.sub(_blank, line)
    # a citation and the number it follows are checked by verify_markdown, with the same notion of "follows"
    for cm in reversed(list(evidence.CITATION.finditer(line))):
        before = evidence._number_before(line, cm.start())  # noqa: SLF001 - the verifier's own rule, kept in step
        start = before[1][0] if before else cm.start()
        line = line[:start] + " " * (cm.end() - start) + line[cm.end():]
    for pattern in _WORD_DATES:
        line = pattern.sub(_blank, line)
    line = _LEADING_ORDINAL.sub(lambda m: m.group(1) + " " * (len(m.group()) - len(m.group(1))), line)
    return _HEADING_NUMBER.sub(lambda m: m.group(1) + " " * (len(m.group()) - len(m.group(1))), line)


def _tokens(line: str) -> list[str]:
    out = []
    for raw in _SPLIT.split(line):
        token = raw.strip(".,:_/")  # sentence punctuation and emphasis around a token
        if token and any(ch.isdigit() for ch in token):
            out.append(token)
    return out


def _is_claim(token: str) -> bool:
    if _DATE.fullmatch(token) or _VERSION.fullmatch(token) or _HEX_ID.fullmatch(token.lower()):
        return False
    if "_" in token or "#" in token:
        return False
    number = _NUMBER.match(token)
    if number and number.end() == len(token):
        return True
    if number and _UNIT.fullmatch(token[number.end():].strip()):
        return True
    if _QUANTITY_WORD.fullmatch(token):
        return True
    # ranges and fractions (0.2–0.7, 2/3) state numbers; anything with letters left is an identifier
    return not any(ch.isalpha() for ch in token)


# ------------------------------------------------------------------ assessment


@dataclass(frozen=True)
class Assessment:
    verified: bool
    findings: list[str] = field(default_factory=list)  # "file:line: problem", mismatches with the logged value
    citations_checked: int = 0


def check_text(text: str) -> tuple[list[evidence.Finding], int]:
    """Citation mismatches (re-read from MLflow) and uncited numbers of one Markdown text; (findings, citations checked).

    ``verify_markdown`` checks the citations; its own uncited-number test is
    stricter than the rule above (it flags list ordinals, versions, dates), so
    that part of its answer is replaced by ``uncited_numbers``. Fenced code
    blocks are blanked first so a citation shown as an example is not checked.
    """
    lines = text.splitlines()
    prose = {n for n, _ in _prose_lines(text)}
    masked = "\n".join(line if n in prose else "" for n, line in enumerate(lines, 1))
    found, checked = evidence.verify_markdown(masked)
    citation_problems = [f for f in found if not f.problem.endswith("has no citation")]
    return sorted(citation_problems + uncited_numbers(masked), key=lambda f: f.line), checked


def assess(paths: list[Path]) -> Assessment:
    """Every report re-checked against the evidence store: ``file:line: problem`` per finding.

    A changed number reads ``report.md:12: shows 4 but gates/models_tested in run <id> is 3`` (the expected
    value is the logged one); an uncited number reads ``report.md:14: number 42 has no citation: ...``.
    """
    findings: list[str] = []
    checked = 0
    for path in map(Path, paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            findings.append(f"{path}:0: cannot be read ({type(exc).__name__}: {exc}): pass an existing UTF-8 report")
            continue
        found, n = check_text(text)
        checked += n
        findings += [f"{path}:{f.line}: {f.problem}" for f in found]
    return Assessment(verified=not findings, findings=findings, citations_checked=checked)
