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

Pure functions; no Prefect, no MLflow. The BibTeX parser is deliberately
small: entries ``@type{key, field = {...} | "..." | number | macro # ...}``
with nested braces, ``@string`` macros, ``@comment``/``@preamble`` skipped,
``(...)`` as well as ``{...}`` delimiters, text between entries ignored.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment

from tasks.rendering import code, make_env, tex_escape

REPO_ROOT = Path(__file__).resolve().parents[1]
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

_AT = re.compile(r"@[ \t]*([A-Za-z][\w-]*)[ \t\r\n]*([{(])")
_FIELD_NAME = re.compile(r"[A-Za-z_][\w\-:.+/]*")
_NUMBER = re.compile(r"\d+")
_KEY_BAD = re.compile(r"[\s{}(),=\"#%'~\\]")
_MONTHS = {m[:3].lower(): m for m in (
    "January February March April May June July August September October November December".split())}


def parse_bibtex(text: str, source: Path | str | None = None) -> list[Entry]:
    """Entries of a BibTeX text, in file order (duplicates included)."""
    return _Parser(text, Path(source) if source is not None else None).parse()


class _Parser:
    def __init__(self, text: str, source: Path | None):
        self.text, self.source, self.macros = text, source, dict(_MONTHS)

    def error(self, pos: int, message: str) -> BibParseError:
        line = self.text.count("\n", 0, pos) + 1
        return BibParseError(f"{self.source or '<bibtex>'}:{line}: {message}")

    def parse(self) -> list[Entry]:
        entries, pos = [], 0
        while (m := _AT.search(self.text, pos)) is not None:
            kind, opener = m.group(1).lower(), m.group(2)
            closer = "}" if opener == "{" else ")"
            if kind in ("comment", "preamble"):
                pos = self.skip_balanced(m.end(), opener, closer, m.start())
            elif kind == "string":
                pos = self.parse_string(m.end(), closer)
            else:
                entry, pos = self.parse_entry(kind, m.start(), m.end(), closer)
                entries.append(entry)
        return entries

    def skip_balanced(self, pos: int, opener: str, closer: str, start: int) -> int:
        depth, i, text = 1, pos, self.text
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == opener:
                depth += 1
            elif c == closer:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        raise self.error(start, f"unbalanced {opener!r}")

    def ws(self, i: int) -> int:
        while i < len(self.text) and self.text[i].isspace():
            i += 1
        return i

    def parse_string(self, i: int, closer: str) -> int:
        i = self.ws(i)
        m = _FIELD_NAME.match(self.text, i)
        if not m:
            raise self.error(i, "@string without a name")
        i = self.ws(m.end())
        if self.text[i:i + 1] != "=":
            raise self.error(i, "expected '=' in @string")
        value, i = self.parse_value(self.ws(i + 1))
        i = self.ws(i)
        if self.text[i:i + 1] != closer:
            raise self.error(i, f"expected {closer!r} to close @string")
        self.macros[m.group().lower()] = value
        return i + 1

    def parse_entry(self, kind: str, start: int, i: int, closer: str) -> tuple[Entry, int]:
        text = self.text
        comma = text.find(",", i)
        end = text.find(closer, i)
        if end < 0 and comma < 0:
            raise self.error(start, f"@{kind} entry is not closed")
        bare = end >= 0 and (comma < 0 or end < comma)  # "@misc{key}": a key and no fields
        key = text[i:end if bare else comma].strip()
        if not key or _KEY_BAD.search(key):
            raise self.error(start, f"@{kind} entry with a missing or bad citation key {key!r}")
        fields: dict[str, str] = {}
        i = end if bare else comma + 1
        while True:
            i = self.ws(i)
            if i >= len(text):
                raise self.error(start, f"entry {key!r} is not closed")
            if text[i] == closer:
                i += 1
                break
            m = _FIELD_NAME.match(text, i)
            if not m:
                raise self.error(i, f"expected a field name in entry {key!r}, found {text[i:i + 20]!r}")
            name = m.group().lower()
            i = self.ws(m.end())
            if text[i:i + 1] != "=":
                raise self.error(i, f"expected '=' after field {name!r} in entry {key!r}")
            value, i = self.parse_value(self.ws(i + 1))
            fields.setdefault(name, value)  # BibTeX keeps the first of a repeated field
            i = self.ws(i)
            if text[i:i + 1] == ",":
                i += 1
            elif text[i:i + 1] != closer:
                raise self.error(i, f"expected ',' or {closer!r} after field {name!r} in entry {key!r}")
        line = text.count("\n", 0, start) + 1
        return Entry(key=key, type=kind, fields=fields, source=self.source, line=line), i

    def parse_value(self, i: int) -> tuple[str, int]:
        parts: list[str] = []
        while True:
            i = self.ws(i)
            c = self.text[i:i + 1]
            if c == "{":
                end = self.skip_balanced(i + 1, "{", "}", i)
                parts.append(self.text[i + 1:end - 1])
                i = end
            elif c == '"':
                part, i = self.quoted(i)
                parts.append(part)
            elif (m := _NUMBER.match(self.text, i)) is not None:
                parts.append(m.group())
                i = m.end()
            elif (m := _FIELD_NAME.match(self.text, i)) is not None:
                parts.append(self.macros.get(m.group().lower(), m.group()))
                i = m.end()
            else:
                raise self.error(i, f"expected a value, found {self.text[i:i + 20]!r}")
            j = self.ws(i)
            if self.text[j:j + 1] != "#":
                return " ".join("".join(parts).split()), i
            i = j + 1

    def quoted(self, start: int) -> tuple[str, int]:
        depth, i, text = 0, start + 1, self.text
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            elif c == '"' and depth == 0:
                return text[start + 1:i], i + 1
            i += 1
        raise self.error(start, 'unterminated "..." value')


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

    Bibliographic numbers (years, pages, "Layer 2") are not evidence; code spans
    are what the evidence verifier skips.
    """
    return re.sub(r"\S*\d\S*", lambda m: f"`{m.group()}`", text.replace("`", "'"))


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
    ``paper/related_work.{tex,md}.j2`` (default: :func:`tasks.rendering.make_env`).
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
