"""Escaping for Markdown reports: user-supplied text never becomes markup.

Two ways a string reaches a report, and one function for each:

* ``code(text)``: identifiers, paths and free text from tags, in an inline
  code span; one line, a backtick becomes ``'``, a ``|`` is escaped so a
  table row cannot be split.
* ``md_text(text)``: any other string as plain text; one line, the Markdown
  and HTML characters escaped, so it cannot open a heading, a table cell, a
  code span, a link, emphasis (a fake bold verdict) or an HTML tag.

Both return ``Markdown``, the marker the report environment's finalize step
(``tasks.reporting.views``) reads as "already escaped": every other value printed by
a template goes through ``md_text``, so a template cannot forget it. Inline
citations ``[run_id:key]`` survive ``md_text``: they are verified like any other.
"""
from __future__ import annotations

import re

from tasks.evidence.cited import CITATION


class Markdown(str):
    """Text that is already Markdown (a filter's or a renderer's output): not escaped again."""


_BREAKS = re.compile(r"[\r\n\t\f\v\x1c-\x1e\x85\u2028\u2029]+")
_SPECIAL = re.compile(r"([\\`*\[\]|#~])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def one_line(text: str) -> str:
    """Line and paragraph breaks (any Unicode kind) become spaces: a value cannot start a new Markdown block."""
    return _BREAKS.sub(" ", text)


def code(text: object) -> Markdown:
    """``text`` in a code span: one line, no backtick, no table-splitting pipe."""
    inner = one_line(str(text)).strip().replace("`", "'").replace("|", "\\|")
    return Markdown(f"`{inner}`" if inner else "` `")


def md_text(text: object) -> Markdown:
    """``text`` as plain Markdown text: one line, Markdown and HTML characters escaped, citations kept."""
    if isinstance(text, Markdown):
        return text
    line = one_line(str(text))
    parts, last = [], 0
    for m in CITATION.finditer(line):
        parts.append(_escape(line[last:m.start()]) + m.group())
        last = m.end()
    parts.append(_escape(line[last:]))
    return Markdown("".join(parts))


def _escape(text: str) -> str:
    text = "".join(_HTML.get(ch, ch) for ch in text)
    return _SPECIAL.sub(r"\\\1", text)
