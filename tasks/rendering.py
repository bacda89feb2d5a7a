"""The one Jinja environment over templates/, and its filters, for every report and paper draft.

Templates print numbers only through ``cite`` (a ``Cited`` value and its
evidence; ``cite_md`` / ``cite_tex`` of tasks/paper.py in the paper drafts),
identifiers and free text through ``code``, LaTeX text through ``tex``.
"""
from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from tasks.cited import Cited

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def cite(value: Cited | None, spec: str = "") -> str:
    """``0.012 [run_id:key]``; a missing value prints as n/a (never a number without evidence)."""
    if value is None:
        return "n/a"
    return f"{value.formatted(spec)} {value.citation}"


def code(text: object) -> str:
    """Identifiers, paths and free text from tags go in code spans (they are not measurements)."""
    return "`" + str(text).replace("`", "'") + "`"


_TEX_SPECIALS = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
    "^": r"\textasciicircum{}", "_": r"\_", "%": r"\%", "~": r"\textasciitilde{}",
}


def tex_escape(text: str) -> str:
    """Plain text → LaTeX that typesets it literally (model ids, headings)."""
    return "".join(_TEX_SPECIALS.get(c, c) for c in str(text))


def make_env(template_dir: Path | str | None = None) -> Environment:
    """Strict (an undefined name fails), no autoescape (Markdown and LaTeX, not HTML), block tags trimmed."""
    env = Environment(loader=FileSystemLoader(template_dir or TEMPLATES), undefined=StrictUndefined, autoescape=False,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(cite=cite, code=code, tex=tex_escape)
    return env
