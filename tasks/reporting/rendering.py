"""The one Jinja environment over templates/, and its filters, for every report and paper draft.

Templates print numbers only through ``cite`` (a ``Cited`` value and its
evidence; ``cite_md`` / ``cite_tex`` of tasks/reporting/paper.py in the paper drafts),
0/1 verdicts through ``cite_flag``, identifiers and free text through ``code``
(``tasks.reporting.markdown``), LaTeX text through ``tex``. Every other value a Markdown
report prints is escaped by the environment's finalize step, so no template can
forget it; a rendered Markdown report carries its citations as footnotes.
"""
from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, Undefined, pass_context

from tasks.evidence import schema
from tasks.evidence.cited import FLAG_WORDS, Cited, flag_word, format_word, to_footnotes
from tasks.reporting.markdown import Markdown, code, md_text

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
__all__ = ["TEMPLATES", "cite", "cite_flag", "code", "make_env", "tex_escape"]


def cite(value: Cited | None) -> Markdown:
    """``0.012 [run_id:key]`` (a footnote once rendered), ``**GO** [run:tags/fa.decision]`` for a word; n/a if not logged."""
    if value is None:
        return Markdown("n/a")
    return Markdown(f"{value.claim()} {value.citation}")


def cite_flag(value: Cited | None, yes: str = "yes", no: str = "no") -> Markdown:
    """A 0/1 metric as a cited word claim, ``**yes**`` / ``**no**`` (or another pair of ``cited.FLAG_WORDS``)."""
    if value is None:
        return Markdown("n/a")
    word = yes if flag_word(value.value) == "yes" else no
    if word not in FLAG_WORDS[int(value.value)]:
        raise ValueError(f"{word!r} is not a word the verifier reads for {value.value}: add it to tasks.evidence.cited.FLAG_WORDS")
    return Markdown(f"{format_word(word)} {value.citation}")


def composed(text: str) -> Markdown:
    """Markdown the project composed itself from fixed words and schema-validated identifiers (model names and action
    ids match ``[a-z0-9_.-]`` / ``[A-Za-z0-9_-]``), e.g. the headline's blocker and next action: kept as written.
    Never for free text a user or a library supplied: that goes through ``code`` or the escaping finalize."""
    return Markdown(text)


_TEX_SPECIALS = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
    "^": r"\textasciicircum{}", "_": r"\_", "%": r"\%", "~": r"\textasciitilde{}",
}


def tex_escape(text: str) -> str:
    """Plain text → LaTeX that typesets it literally (model ids, headings)."""
    return "".join(_TEX_SPECIALS.get(c, c) for c in str(text))


def _is_report(name: str | None) -> bool:
    """A Markdown report (escaped, footnoted); the paper drafts escape their own text and keep inline citations."""
    name = str(name or "")
    return name.endswith(".md.j2") and not name.startswith("paper/")


@pass_context
def _finalize(context, value: object) -> object:
    """Autoescape for Markdown reports: every ``{{ ... }}`` that is not a filter's Markdown is escaped."""
    if isinstance(value, (Markdown, Undefined)) or not _is_report(context.name):
        return value
    return md_text(value)


class _FootnotedTemplate(Template):
    """A rendered Markdown report carries its citations as footnotes (``tasks.evidence.cited.to_footnotes``)."""

    def render(self, *args, **kwargs) -> str:
        text = super().render(*args, **kwargs)
        return to_footnotes(text) if _is_report(self.name) else text


def make_env(template_dir: Path | str | None = None) -> Environment:
    """Strict (an undefined name fails), escaped by finalize (Markdown and LaTeX, not HTML), block tags trimmed."""
    env = Environment(loader=FileSystemLoader(template_dir or TEMPLATES), undefined=StrictUndefined, autoescape=False,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, finalize=_finalize)
    env.template_class = _FootnotedTemplate
    env.filters.update(cite=cite, cite_flag=cite_flag, code=code, composed=composed, text=md_text, tex=tex_escape)
    env.globals["tag"] = schema  # templates name tags as the stages do: tag.STATUS, never a 'fa.' string
    return env
