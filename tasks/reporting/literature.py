"""Local BibTeX library → related-work draft (LaTeX and a Markdown twin).

The project ships ``literature/references.bib``; a user adds their own .bib.
:func:`load_library` merges them (a later file wins on a duplicate key and the
clash is recorded in ``Library.warnings``); :func:`render_related_work` groups
the entries into the paper outline's four categories (source document 000,
Task 7) and renders ``paper/related_work.tex.j2`` / ``.md.j2``.

A category comes from the entry's ``keywords`` field; the sentence written for
an entry from its ``annote`` field (LaTeX, no trailing period), falling back to
its title. Every citation key must resolve, otherwise :class:`UnknownCitation`
names the key and the .bib files searched.

The Markdown twin keeps bibliographic numbers (years, page ranges) inside code
spans, so ``fusionaudit verify`` never mistakes them for uncited evidence.

Pure functions; no Prefect, no MLflow. bibtexparser reads the files (nested
braces, ``@string`` macros, ``@comment``/``@preamble``, ``(...)`` delimiters,
text between entries); the month macros and ``#`` concatenation are resolved
here, as BibTeX does.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bibtexparser
from bibtexparser.model import DuplicateBlockKeyBlock
from jinja2 import Environment

from tasks.reporting.rendering import code, make_env, tex_escape

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_BIB = REPO_ROOT / "literature" / "references.bib"

#: The related-work categories of the paper outline, in section order.
CATEGORIES: tuple[str, ...] = (
    "Vision-Language Pre-training",
    "Attention Mechanisms in Transformers",
    "Multimodal Fusion Strategies",
    "Diagnostic Tools for Deep Learning",
)

#: Opening sentence per category (plain text, valid as LaTeX and Markdown).
CATEGORY_INTRO: dict[str, str] = {
    CATEGORIES[0]: (
        "Vision-language models couple an image encoder with a text encoder or a language model; "
        "they differ in where and how the two modalities meet, which a diagnosis of collapse has to account for."
    ),
    CATEGORIES[1]: (
        "Transformers mix information through self-attention within a sequence and cross-attention between "
        "sequences, so the attention that image tokens receive is a first, observable signal of how a model "
        "divides its capacity between modalities."
    ),
    CATEGORIES[2]: (
        "Where fusion happens (early in a single stream, late in a shared embedding space, or through dedicated "
        "cross-attention) shapes how the modalities compete during training, and joint training can leave one "
        "of them under-used."
    ),
    CATEGORIES[3]: (
        "Attention weights, relevance propagation and Shapley-value attributions give different and sometimes "
        "conflicting views of what a model relies on, and turning per-sample scores into defensible claims "
        "rests on established statistical procedures."
    ),
}

RELATED_WORK_TEX = "paper/related_work.tex.j2"
RELATED_WORK_MD = "paper/related_work.md.j2"


# --------------------------------------------------------------------------- errors


class BibParseError(ValueError):
    """Malformed BibTeX; the message names the file and line."""


class UnknownCitation(LookupError):
    """A cited key is in none of the .bib files searched."""

    def __init__(self, keys: Sequence[str], searched: Sequence[Path | str]):
        self.keys = tuple(keys)
        self.key = self.keys[0] if self.keys else ""
        self.searched = tuple(str(p) for p in searched)
        where = ", ".join(self.searched) or "(no .bib files)"
        names = ", ".join(repr(k) for k in self.keys)
        super().__init__(f"unknown citation key {names}: not found in {where}")

    def __str__(self) -> str:  # LookupError would repr() the message
        return str(self.args[0])


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class Entry:
    """One BibTeX entry; ``fields`` maps lower-case field names to their LaTeX text."""

    key: str
    type: str
    fields: Mapping[str, str] = field(hash=False)
    source: Path | None = None
    line: int = 0

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name.lower(), default)

    @property
    def year(self) -> str:
        return latex_to_text(self.get("year")) or "n.d."

    @property
    def title(self) -> str:
        """Title as plain text (braces and accents resolved)."""
        return latex_to_text(self.get("title")) or self.key

    @property
    def category(self) -> str | None:
        """The first ``keywords`` item naming a known category, else the first item, else None."""
        items = [k.strip() for k in re.split(r"[;,]", latex_to_text(self.get("keywords"))) if k.strip()]
        known = {c.lower(): c for c in CATEGORIES}
        for item in items:
            if item.lower() in known:
                return known[item.lower()]
        return items[0] if items else None

    @property
    def last_names(self) -> list[str]:
        """Authors' (else editors') last names, plain text; ``others`` becomes ``"others"``."""
        raw = self.get("author") or self.get("editor")
        if not raw:
            return []
        return [_last_name(n) for n in split_top_level(raw, r"\s+and\s+")]

    def author_year(self) -> str:
        """``Shapley, 1953`` / ``Abnar and Zuidema, 2020`` / ``Radford et al., 2021``."""
        names = self.last_names
        real = [n for n in names if n != "others"]
        if not real:
            who = self.title
        elif len(real) == 1:
            who = real[0] + (" et al." if len(names) > 1 else "")
        elif len(names) == 2:
            who = f"{real[0]} and {real[1]}"
        else:
            who = f"{real[0]} et al."
        return f"{who}, {self.year}"

    def venue(self) -> str:
        for name in ("booktitle", "journal", "publisher", "howpublished", "school", "institution"):
            if self.get(name):
                return latex_to_text(self.get(name))
        return ""


class Library(dict[str, Entry]):
    """Citation key → entry, plus the files it was read from and merge warnings."""

    def __init__(self, entries: Iterable[tuple[str, Entry]] = (), sources: Sequence[Path] = (),
                 warnings: Sequence[str] = ()):
        super().__init__(entries)
        self.sources: tuple[Path, ...] = tuple(sources)
        self.warnings: list[str] = list(warnings)

    def resolve(self, keys: Iterable[str]) -> list[Entry]:
        """Entries for ``keys`` in order; :class:`UnknownCitation` lists every missing key."""
        keys = list(keys)
        missing = [k for k in dict.fromkeys(keys) if k not in self]
        if missing:
            raise UnknownCitation(missing, self.sources)
        return [self[k] for k in keys]


# --------------------------------------------------------------------------- parsing

_NAME = re.compile(r"[A-Za-z_][\w\-:.+/]*")
_KEY_BAD = re.compile(r"[\s{}(),=\"#%'~\\]")
_MONTHS = {m[:3].lower(): m for m in (
    "January February March April May June July August September October November December".split())}


def parse_bibtex(text: str, source: Path | str | None = None) -> list[Entry]:
    """Entries of a BibTeX text, in file order (duplicates included).

    bibtexparser splits the text into blocks (entries, ``@string``, ``@comment``,
    ``@preamble``, free text); field values come back raw and :func:`_value`
    reads them the BibTeX way.
    """
    where = Path(source) if source is not None else None

    def error(line: int, message: str) -> BibParseError:  # bibtexparser counts lines from 0
        return BibParseError(f"{where or '<bibtex>'}:{line + 1}: {message}")

    blocks = bibtexparser.parse_string(text, parse_stack=[])  # raw values: no middleware rewrites them
    for failed in blocks.failed_blocks:
        if not isinstance(failed, DuplicateBlockKeyBlock):
            raise error(failed.start_line, f"malformed block ({failed.error}): {failed.raw.strip()[:40]!r}")
    macros = dict(_MONTHS)
    for string in blocks.strings:
        macros[string.key.lower()] = _value(string.value, macros, lambda m, s=string: error(s.start_line, m))
    found = blocks.entries + [b.ignore_error_block for b in blocks.failed_blocks]  # a repeated key is kept too
    entries = []
    for raw in sorted(found, key=lambda e: e.start_line):
        if not raw.key or _KEY_BAD.search(raw.key):
            raise error(raw.start_line, f"@{raw.entry_type} entry with a missing or bad citation key {raw.key!r}")
        fields: dict[str, str] = {}
        for f in raw.fields:
            where_f = lambda m, f=f: error(raw.start_line, f"field {f.key!r} of entry {raw.key!r}: {m}")  # noqa: E731
            fields.setdefault(f.key.lower(), _value(f.value, macros, where_f))  # BibTeX keeps the first
        entries.append(Entry(key=raw.key, type=raw.entry_type.lower(), fields=fields, source=where,
                             line=raw.start_line + 1))
    return entries


def _value(raw: str, macros: Mapping[str, str], error) -> str:
    """A raw field value: ``{...}``, ``"..."``, numbers and macros joined by ``#``, whitespace collapsed."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, c in enumerate(raw + "#"):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == '"' and depth == 0:
            quoted = not quoted
        elif c == "#" and depth == 0 and not quoted:
            parts.append(raw[start:i].strip())
            start = i + 1
    text = []
    for part in parts:
        if part[:1] in "{\"" and len(part) > 1 and _one_group(part):
            text.append(part[1:-1])
        elif part.isdigit():
            text.append(part)
        elif _NAME.fullmatch(part):
            text.append(macros.get(part.lower(), part))
        else:
            raise error(f"expected {{...}}, \"...\", a number or a macro, found {part[:20]!r}")
    return " ".join("".join(text).split())


def _one_group(part: str) -> bool:
    """``part`` is one ``{...}`` or ``"..."`` group: its opening delimiter closes at its last character."""
    if part[0] == '"':
        return part[-1] == '"'
    depth = 0
    for i, c in enumerate(part):
        depth += {"{": 1, "}": -1}.get(c, 0)
        if depth == 0:
            return i == len(part) - 1
    return False


def load_library(paths: Sequence[Path | str] | None = None) -> Library:
    """Merge .bib files in order (default: the project's library).

    A key seen again in a later file (or later in the same file) replaces the
    earlier entry; each replacement is recorded in ``Library.warnings``.
    """
    sources = [Path(p) for p in (paths if paths is not None else [PROJECT_BIB])]
    merged: dict[str, Entry] = {}
    warnings: list[str] = []
    for path in sources:
        if not path.is_file():
            raise FileNotFoundError(f"BibTeX file not found: {path}")
        for entry in parse_bibtex(path.read_text(encoding="utf-8"), path):
            old = merged.get(entry.key)
            if old is not None:
                warnings.append(
                    f"duplicate citation key {entry.key!r}: {entry.source}:{entry.line} "
                    f"replaces {old.source}:{old.line}")
            merged[entry.key] = entry
    return Library(merged.items(), sources, warnings)


# --------------------------------------------------------------------------- text helpers


def split_top_level(text: str, separator: str) -> list[str]:
    """Split on a regex separator outside braces (``{Smith and Sons}`` stays whole)."""
    pieces, depth, last, i = [], 0, 0, 0
    pattern = re.compile(separator)
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif depth == 0 and (m := pattern.match(text, i)) is not None and m.end() > i:
            pieces.append(text[last:i])
            last = i = m.end()
            continue
        i += 1
    pieces.append(text[last:])
    return [p.strip() for p in pieces if p.strip()]


def _last_name(name: str) -> str:
    name = name.strip()
    if name.lower() == "others":
        return "others"
    parts = split_top_level(name, r",")
    if len(parts) > 1:  # "von Last, Jr, First" or "Last, First"
        return latex_to_text(parts[0])
    words = split_top_level(name, r"\s+")
    if len(words) == 1:
        return latex_to_text(words[0])
    # "First von Last": the last name starts at the first lower-case word after the first
    for k in range(1, len(words) - 1):
        if words[k][:1].islower():
            return latex_to_text(" ".join(words[k:]))
    return latex_to_text(words[-1])


_ACCENTS = {"`": "\u0300", "'": "\u0301", "^": "\u0302", '"': "\u0308", "~": "\u0303", "=": "\u0304",
            ".": "\u0307", "u": "\u0306", "v": "\u030c", "H": "\u030b", "c": "\u0327", "k": "\u0328"}
_ACCENT_RE = re.compile(r"\\([`'^\"~=.])\s*\{?\s*([A-Za-z])\s*\}?|\\([uvHck])(?:\s*\{\s*([A-Za-z])\s*\}|\s+([A-Za-z]))")
_LETTERS = {"ss": "ß", "o": "ø", "O": "Ø", "l": "ł", "L": "Ł", "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ",
            "aa": "å", "AA": "Å", "i": "i", "j": "j"}
_LETTER_RE = re.compile(r"\\(ss|oe|OE|ae|AE|aa|AA|o|O|l|L|i|j)(?![A-Za-z])(?:\{\}|\s*)")
_ESCAPED = re.compile(r"\\([&%$#_{}])")


def latex_to_text(text: str) -> str:
    """BibTeX/LaTeX field text → plain Unicode text (for Markdown and author names)."""
    if not text:
        return ""
    s = _LETTER_RE.sub(lambda m: _LETTERS[m.group(1)], text)

    def accent(m: re.Match) -> str:
        mark = m.group(1) or m.group(3)
        letter = m.group(2) or m.group(4) or m.group(5)
        return unicodedata.normalize("NFC", letter + _ACCENTS[mark])

    s = _ACCENT_RE.sub(accent, s)
    s = s.replace("---", "\u2014").replace("--", "\u2013").replace("~", " ")
    s = _ESCAPED.sub(lambda m: {"{": "\x00", "}": "\x01"}.get(m.group(1), m.group(1)), s)
    s = re.sub(r"\\[A-Za-z]+\*?\s*", "", s)  # \emph{x} → x, \textbf{x} → x
    s = s.replace("{", "").replace("}", "").replace("\x00", "{").replace("\x01", "}")
    return " ".join(s.split())


def md_literal(text: str) -> str:
    """Plain text for Markdown with every token that holds a digit in a code span.

    Bibliographic numbers (years, pages, "Layer 2") are not evidence; a code span
    that holds words is what the evidence verifier reads as text.
    """
    # the word before a number goes in the span too: a span of words is text to the verifier, a bare number a claim
    return re.sub(r"(?:[^\s\d`]+\s+)?\S*\d\S*", lambda m: f"`{m.group()}`", text.replace("`", "'"))


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class CitedWork:
    """One entry as the related-work templates use it."""

    key: str
    category: str
    tex: str           # "<sentence>~\cite{key}."
    md: str            # "<sentence> ([`Author, year`](#key))."
    reference_md: str  # one line of the Markdown reference list


@dataclass(frozen=True)
class Section:
    name: str
    intro: str
    works: tuple[CitedWork, ...]

    @property
    def name_tex(self) -> str:
        return tex_escape(self.name)

    @property
    def name_md(self) -> str:
        return md_literal(self.name)


def _cited_work(entry: Entry, category: str) -> CitedWork:
    annote = entry.get("annote").strip().rstrip(".")
    tex_sentence = annote if annote else f"\\emph{{{entry.get('title') or entry.key}}}"
    md_sentence = md_literal(latex_to_text(annote)) if annote else f"*{md_literal(entry.title)}*"
    md_cite = f"[{code(entry.author_year())}](#{entry.key})"
    venue = md_literal(entry.venue())
    reference = f'<a id="{entry.key}"></a>{code(entry.author_year())}. *{md_literal(entry.title)}*.'
    if venue:
        reference += f" {venue}."
    if entry.get("doi"):
        reference += f" {code('doi:' + entry.get('doi'))}"
    return CitedWork(
        key=entry.key,
        category=category,
        tex=f"{tex_sentence}~\\cite{{{entry.key}}}.",
        md=f"{md_sentence} ({md_cite}).",
        reference_md=reference,
    )


def group_by_category(library: Mapping[str, Entry]) -> dict[str, list[str]]:
    """Keys per known category, in outline order and, within one, in library (file) order.

    Entries whose ``keywords`` name none of :data:`CATEGORIES` are left out.
    """
    grouped: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    for entry in library.values():
        if entry.category in grouped:
            grouped[entry.category].append(entry.key)
    return {c: keys for c, keys in grouped.items() if keys}


def related_work_sections(library: Library | Mapping[str, Entry],
                          keys_by_category: Mapping[str, Sequence[str]] | None = None) -> list[Section]:
    """The sections the templates render; raises :class:`UnknownCitation` on any unresolved key."""
    if keys_by_category is None:
        keys_by_category = group_by_category(library)
    missing = [k for keys in keys_by_category.values() for k in keys if k not in library]
    if missing:
        raise UnknownCitation(list(dict.fromkeys(missing)), getattr(library, "sources", ()))
    sections = []
    for category, keys in keys_by_category.items():
        if not keys:
            continue
        works = tuple(_cited_work(library[k], category) for k in keys)
        sections.append(Section(category, CATEGORY_INTRO.get(category, ""), works))
    return sections


def render_related_work(library: Library | Mapping[str, Entry],
                        keys_by_category: Mapping[str, Sequence[str]] | None = None,
                        env: Environment | None = None) -> tuple[str, str]:
    """Render the related-work section: ``(latex, markdown)``.

    ``keys_by_category`` maps a section heading to citation keys, in the
    order to write them; ``None`` takes every library entry whose
    ``keywords`` name one of :data:`CATEGORIES`. ``env`` loads
    ``paper/related_work.{tex,md}.j2`` (default: :func:`tasks.reporting.rendering.make_env`).
    """
    env = env or make_env()
    sections = related_work_sections(library, keys_by_category)
    sources = [Path(p).name for p in getattr(library, "sources", ())]
    cited = [w for s in sections for w in s.works]
    references = list({w.key: w for w in cited}.values())
    context = {
        "sections": sections,
        "sources_tex": ", ".join(sources),  # a LaTeX comment: no escaping needed
        "sources_md": md_literal(", ".join(sources)),
        "references": references,
    }
    tex = env.get_template(RELATED_WORK_TEX).render(context)
    md = env.get_template(RELATED_WORK_MD).render(context)
    return tex, md
