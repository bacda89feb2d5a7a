"""A value together with the place it is logged: the unit every report is built from.

A report cites its evidence with Markdown footnotes: ``0.993[^e1]`` in the
text and ``[^e1]: run <run_id>, key <key>`` at the end, one footnote per
distinct (run, key), reused. Renderers and agents write the inline marker
``[run_id:key]`` (``Cited.citation``); ``to_footnotes`` turns a finished
document into footnotes and ``from_footnotes`` turns it back for the verifier,
so the citation form lives here and nowhere else.

What a citation may follow (the *claim*) is also defined here, once:

* a number, printed exactly as ``format_number`` prints the logged value;
* a word claim in bold, ``**GO**``: a logged tag or text param printed
  verbatim, or a 0/1 metric printed as one of ``FLAG_WORDS``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

CITATION = re.compile(r"\[(?P<run>[0-9a-f]{32}):(?P<key>[^\]\s]+)\]")
FOOTNOTE_REF = re.compile(r"\[\^(?P<label>[^\]\s]+)\]")
FOOTNOTE_DEF = re.compile(r"^\[\^(?P<label>[^\]\s]+)\]:\s*(?P<body>.*)$")
_FOOTNOTE_BODY = re.compile(r"run (?P<run>[0-9a-f]{32}), key (?P<key>\S+)")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")

# A 0/1 metric shown as a word: the words each value may be printed as.
FLAG_WORDS: dict[int, frozenset[str]] = {1: frozenset({"yes", "COLLAPSE", "pass", "PASS", "robust"}), 0: frozenset({"no", "no collapse shown", "FAIL", "fragile"})}
# Words that state a verdict: in bold or alone in a table cell they must carry a citation.
CLAIM_WORDS = frozenset({"GO", "PIVOT", "NEED_MORE_DATA", "Completed", "Blocked", "Failed", "Killed", "VERIFIED",
                         "NOT VERIFIED", "balanced", "not shown to differ", "yes", "no"}) | frozenset().union(*FLAG_WORDS.values())


@dataclass(frozen=True)
class Cited:
    """A value read back from MLflow and its citation.

    ``kind`` is "metric", "param" or "tag"; the inline citation reads
    ``[run_id:key]`` for a metric, ``[run_id:params/key]`` for a param and
    ``[run_id:tags/key]`` for a tag (DESIGN.md, Evidence).
    """

    value: float | int | str
    run_id: str
    key: str
    kind: Literal["metric", "param", "tag"] = "metric"

    @property
    def citation(self) -> str:
        return f"[{reference(self.run_id, self.key, self.kind)}]"

    def formatted(self, spec: str = "") -> str:
        return format_number(self.value, spec)

    def claim(self) -> str:
        """The value as a report shows it: a number by ``format_number``, a word in bold."""
        return format_word(self.value) if isinstance(self.value, str) else self.formatted()

    def flag(self) -> str:
        """A 0/1 metric as the word claim ``**yes**`` / ``**no**``."""
        return format_word(flag_word(self.value))


def reference(run_id: str, key: str, kind: Literal["metric", "param", "tag"] = "metric") -> str:
    """What a citation's brackets hold: ``run_id:key``, ``run_id:params/key`` or ``run_id:tags/key``."""
    return f"{run_id}:" + {"param": f"params/{key}", "tag": f"tags/{key}"}.get(kind, key)


def format_number(value: float | int | str, spec: str = "") -> str:
    """One formatting rule for reports and the verifier, so both agree on digits."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if spec:
        return format(value, spec)
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.3f}"


def format_word(text: str) -> str:
    """A word claim in bold; ``*`` and newlines cannot occur in it (they would end the bold early)."""
    return "**" + " ".join(str(text).replace("*", "").split()) + "**"


def flag_word(value: object) -> str:
    if value not in (0, 1):
        raise ValueError(f"a flag is 0 or 1, got {value!r}")
    return "yes" if value == 1 else "no"


def expected_claims(value: float | int | str) -> set[str]:
    """Every way the project's formatters print this logged value (the verifier's reference)."""
    if isinstance(value, str):
        return {format_word(value)[2:-2]}
    shown = {format_number(value)}
    if value in (0, 1):
        shown |= FLAG_WORDS[int(value)]
    return shown


# ------------------------------------------------------------------ footnotes


def to_footnotes(markdown: str) -> str:
    """Inline ``0.993 [run:key]`` → ``0.993[^e1]`` plus ``[^e1]: run <run>, key <key>`` at the end.

    One footnote per distinct (run, key), numbered in order of first use;
    fenced code blocks are left alone (an example there is not a citation).
    """
    labels: dict[tuple[str, str], str] = {}

    def ref(m: re.Match) -> str:
        label = labels.setdefault((m.group("run"), m.group("key")), f"e{len(labels) + 1}")
        return f"[^{label}]"

    out, fenced = [], None
    for line in markdown.split("\n"):
        fence = _FENCE.match(line)
        if fence:
            fenced = None if fenced == fence.group(1) else (fenced or fence.group(1))
        elif fenced is None:
            line = _outside_code(line, lambda part: re.sub(r"[ \t]?" + CITATION.pattern, ref, part))
        out.append(line)
    text = "\n".join(out)
    if not labels:
        return text
    notes = "\n".join(f"[^{label}]: run {run}, key {key}" for (run, key), label in labels.items())
    return text.rstrip("\n") + "\n\n" + notes + "\n"


def _split_footnotes(markdown: str) -> tuple[str, dict[str, re.Match]]:
    """(the text without its footnote definitions, each definition by label)."""
    lines = markdown.rstrip("\n").split("\n")
    defs = {m.group("label"): m for line in lines if (m := FOOTNOTE_DEF.match(line))}
    return "\n".join(line for line in lines if not FOOTNOTE_DEF.match(line)).rstrip("\n"), defs


def used_footnotes(markdown: str) -> str:
    """``markdown`` without footnote definitions, then the definitions it references (an excerpt stays verifiable)."""
    body, defs = _split_footnotes(markdown)
    used = dict.fromkeys(m.group("label") for m in FOOTNOTE_REF.finditer(body) if m.group("label") in defs)
    return body + "\n" + ("\n" + "\n".join(defs[label].group(0) for label in used) + "\n" if used else "")


REFERENCES_HEADING = "Evidence behind each reference"


def footnotes_as_references(markdown: str) -> str:
    """For viewers without footnotes (the Prefect UI): ``0.993[^e1]`` → ``0.993 [e1]``, definitions → a list at the end.

    The label and its run/key stay as the report has them, so a reader can still look each number up.
    """
    body, defs = _split_footnotes(markdown)
    body = "\n".join(line if _FENCE.match(line) else _outside_code(line, lambda part: FOOTNOTE_REF.sub(r" \\[\g<label>\\]", part))
                     for line in body.split("\n"))
    if not defs:
        return body + "\n"
    listed = "\n".join(f"- **{label}**: {_code_ids(m.group('body'))}" for label, m in defs.items())
    return f"{body}\n\n**{REFERENCES_HEADING}** (MLflow run and key; `fusionaudit verify` re-reads each):\n\n{listed}\n"


def _code_ids(body: str) -> str:
    m = _FOOTNOTE_BODY.fullmatch(body.strip())
    return f"run `{m.group('run')}`, key `{m.group('key')}`" if m else body


_CODE_SPAN = re.compile(r"(`+).+?\1")


def _outside_code(line: str, fn) -> str:
    """Apply ``fn`` to the parts of a line outside inline code spans (a citation shown as code stays code)."""
    out, last = [], 0
    for m in _CODE_SPAN.finditer(line):
        out += [fn(line[last:m.start()]), m.group()]
        last = m.end()
    return "".join(out + [fn(line[last:])])


@dataclass(frozen=True)
class FootnoteProblem:
    line: int
    problem: str
    text: str


def from_footnotes(markdown: str) -> tuple[str, list[FootnoteProblem]]:
    """Footnote references back to inline citations (line numbers kept), and what is wrong with the footnotes.

    A definition line becomes blank. Problems: a reference with no definition
    (a removed or renamed footnote), a definition that is not ``run <32 hex>,
    key <key>``, a label defined twice, a definition no reference uses.
    """
    lines = markdown.split("\n")
    problems: list[FootnoteProblem] = []
    targets: dict[str, str] = {}
    defined_at: dict[str, int] = {}
    fenced = None
    prose = []
    for i, line in enumerate(lines):
        fence = _FENCE.match(line)
        if fence:
            fenced = None if fenced == fence.group(1) else (fenced or fence.group(1))
            continue
        if fenced is not None:
            continue
        d = FOOTNOTE_DEF.match(line)
        if d is None:
            prose.append(i)
            continue
        label, body = d.group("label"), d.group("body").strip()
        lines[i] = ""
        if label in defined_at:
            problems.append(FootnoteProblem(i + 1, f"footnote [^{label}] is defined twice (first on line "
                                                   f"{defined_at[label]})", line))
            continue
        defined_at[label] = i + 1
        target = _FOOTNOTE_BODY.fullmatch(body)
        if target is None:
            problems.append(FootnoteProblem(i + 1, f"footnote [^{label}] does not name evidence: it must read "
                                                   f"'run <run_id>, key <key>'", line))
            continue
        targets[label] = f"[{target.group('run')}:{target.group('key')}]"
    used: set[str] = set()
    for i in prose:
        def inline(m: re.Match, i: int = i) -> str:
            label = m.group("label")
            used.add(label)
            if label not in targets:
                if label not in defined_at:
                    problems.append(FootnoteProblem(i + 1, f"footnote [^{label}] has no definition "
                                                           "(its evidence line was removed)", lines[i]))
                return " [^?]"
            return " " + targets[label]
        lines[i] = FOOTNOTE_REF.sub(inline, lines[i])
    for label, at in defined_at.items():
        if label not in used:
            problems.append(FootnoteProblem(at, f"footnote [^{label}] is cited nowhere", markdown.split("\n")[at - 1]))
    return "\n".join(lines), sorted(problems, key=lambda p: p.line)
