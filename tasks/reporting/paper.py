"""Paper drafts filled from evidence: the abstract, in LaTeX and Markdown.

The wording follows the abstract template of the Week-1 paper outline (source
document 000, Task 7: framework name, number of models, p-value, Cohen's d,
key finding, architectures) but is chosen by the cycle's decision, so the
draft never claims more than the evidence: only ``GO`` with enough distinct
external architectures counted by the gates says that collapse recurs
across the tested architectures; ``PIVOT`` writes a focused case
study; ``NEED_MORE_DATA`` reports preliminary counts and makes no claim.

Every number is a :class:`~tasks.evidence.cited.Cited` and is written through one of
two Jinja filters, defined here and only here:

``cite_md(c, spec="")``
    ``"0.912 [<run_id>:<key>]"`` — ``c.formatted(spec) + " " + c.citation``,
    the form ``fusionaudit verify`` checks.
``cite_tex(c, spec="")``
    ``"\\fa{0.912}{<run_id>:<key>}"`` — the generated .tex defines
    ``\\providecommand{\\fa}[2]{#1}`` (and its header comment asks for
    ``\\newcommand{\\fa}[2]{#1}`` in the preamble), so the value prints and
    the citation stays in the source.

Both raise ``TypeError`` for anything that is not a ``Cited``: a bare number
cannot reach a report. Register them on the reporting environment::

    env.filters.update(cite_md=cite_md, cite_tex=cite_tex)

:func:`render_abstract` works without that too: it renders on an overlay of
the caller's environment that adds whichever of them is missing (the caller's
environment is not modified) and is always ``StrictUndefined``.
"""
from __future__ import annotations

import math
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined, Undefined

from tasks.evidence import RunEvidence, schema
from tasks.evidence.cited import Cited
from tasks.reporting.rendering import code, make_env, tex_escape

DECISIONS: tuple[str, ...] = ("GO", "PIVOT", "NEED_MORE_DATA")
ABSTRACT_TEX = "paper/abstract.tex.j2"
ABSTRACT_MD = "paper/abstract.md.j2"
FA_NEWCOMMAND = r"\newcommand{\fa}[2]{#1}"
FA_PROVIDECOMMAND = r"\providecommand{\fa}[2]{#1}"
FRAMEWORK_NAME = "fusionaudit"

_BAD_IN_TEX_ARG = set("%{}\\#")
_MODALITY = {"image": "image", "vision": "image", "visual": "image",
             "text": "text", "textual": "text", "language": "text"}


# --------------------------------------------------------------------------- filters


def _require_cited(c: object, name: str) -> Cited:
    if isinstance(c, Undefined):
        str(c)  # a StrictUndefined raises here, naming the missing variable
    if not isinstance(c, Cited):
        raise TypeError(
            f"{name} needs a Cited value (a number with its MLflow citation), got "
            f"{type(c).__name__} {c!r}: a report never shows a number without its citation")
    return c


def cite_md(c: Cited, spec: str = "") -> str:
    """Markdown: ``<formatted value> [run_id:key]`` (params: ``[run_id:params/key]``)."""
    c = _require_cited(c, "cite_md")
    return f"{c.formatted(spec)} {c.citation}"


def cite_tex(c: Cited, spec: str = "") -> str:
    """LaTeX: ``\\fa{<formatted value>}{run_id:key}``; the value is escaped, the citation verbatim."""
    c = _require_cited(c, "cite_tex")
    ref = c.citation[1:-1]
    if _BAD_IN_TEX_ARG & set(ref):
        raise ValueError(f"citation {c.citation} cannot sit in a LaTeX argument verbatim")
    return f"\\fa{{{tex_escape(c.formatted(spec))}}}{{{ref}}}"


FILTERS = {"cite_md": cite_md, "cite_tex": cite_tex}


def with_paper_filters(env: Environment) -> Environment:
    """An overlay of ``env`` with the cite filters (the caller's own take precedence), strict undefined."""
    overlay = env.overlay(undefined=StrictUndefined, autoescape=False, cache_size=0)
    overlay.filters = {**FILTERS, **env.filters}
    return overlay


# --------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class CollapsedModel:
    """A model whose verdict was "collapsed": its name, the modality it collapsed toward, its imbalance."""

    name: str
    dominant: str  # "image" | "text"
    imbalance: Cited | None = None

    def __post_init__(self) -> None:
        dominant = _MODALITY.get(str(self.dominant).lower())
        if dominant is None:
            raise ValueError(f"{self.name}: dominant modality must be image or text, got {self.dominant!r}")
        object.__setattr__(self, "dominant", dominant)
        if self.imbalance is not None:
            _require_cited(self.imbalance, f"imbalance of {self.name}")

    @property
    def name_tex(self) -> str:
        return f"\\texttt{{{tex_escape(self.name)}}}"

    @property
    def name_md(self) -> str:
        return code(self.name)


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _count(facts: Mapping[str, Any], key: str) -> Cited:
    if key not in facts:
        raise KeyError(f"abstract facts need {key!r}")
    c = _require_cited(facts[key], key)
    whole = not isinstance(c.value, str) and math.isfinite(c.value) and float(c.value).is_integer()
    if not whole or c.value < 0:
        raise ValueError(f"{key} must be a non-negative whole number, got {c.value!r} {c.citation}")
    return c


def _optional_cited(facts: Mapping[str, Any], key: str) -> Cited | None:
    value = facts.get(key)
    return None if value is None else _require_cited(value, key)


def abstract_context(facts: Mapping[str, Any]) -> dict[str, Any]:
    """Check the facts against each other and build the templates' context.

    ``facts`` keys:

    - ``decision`` (required): ``"GO"``, ``"PIVOT"`` or ``"NEED_MORE_DATA"``.
    - ``n_models_tested``, ``n_models_collapsed`` (required): ``Cited`` counts.
    - ``collapsed_models``: the collapsed models, ``CollapsedModel`` or mappings
      with ``name``, ``dominant`` and optionally ``imbalance`` (``Cited``);
      must number ``n_models_collapsed``. Together they are the key finding.
    - ``p_value``, ``cohens_d``: ``Cited``, of the strongest collapsed model;
      required when any model collapsed, not shown when none did.
    - ``strongest_model``: its name (optional).
    - ``models_tested``: names of the tested models (optional; when given,
      must number ``n_models_tested``).
    - ``framework_name``: default ``"fusionaudit"``.
    - ``n_architectures``, ``min_architectures``: ``Cited``; the distinct
      external architectures the gates counted and the gates' minimum. Only
      with enough of them may a draft claim a pattern across architectures.

    Raises ``ValueError``/``TypeError``/``KeyError`` on facts that contradict
    each other or a bare number where a citation is needed.
    """
    decision = str(facts.get("decision", "")).upper()
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {facts.get('decision')!r}")
    n_tested = _count(facts, "n_models_tested")
    n_collapsed = _count(facts, "n_models_collapsed")
    tested, k = int(n_tested.value), int(n_collapsed.value)
    if k > tested:
        raise ValueError(f"{k} collapsed models {n_collapsed.citation} but only {tested} tested {n_tested.citation}")

    collapsed = [m if isinstance(m, CollapsedModel) else CollapsedModel(**dict(m))
                 for m in facts.get("collapsed_models") or ()]
    if len(collapsed) != k:
        raise ValueError(f"n_models_collapsed is {k} {n_collapsed.citation} "
                         f"but collapsed_models names {len(collapsed)}")
    models_tested = [str(m) for m in facts.get("models_tested") or ()]
    if models_tested and len(models_tested) != tested:
        raise ValueError(f"n_models_tested is {tested} {n_tested.citation} "
                         f"but models_tested names {len(models_tested)}")

    p_value, cohens_d = _optional_cited(facts, "p_value"), _optional_cited(facts, "cohens_d")
    if k and (p_value is None or cohens_d is None):
        raise ValueError("p_value and cohens_d of the strongest collapsed model are required "
                         "when a model collapsed")
    if decision == "GO" and k == 0:
        raise ValueError("decision GO with no collapsed model: the evidence does not support it")
    if k == 0:
        p_value = cohens_d = None

    dominants = {m.dominant for m in collapsed}
    strongest = facts.get("strongest_model")
    # A pattern across architectures is claimed only when the gates counted enough distinct external architectures.
    n_arch, min_arch = _optional_cited(facts, "n_architectures"), _optional_cited(facts, "min_architectures")
    cross = bool(decision == "GO" and k > 1 and n_arch is not None and min_arch is not None
                 and n_arch.value >= max(2, min_arch.value))
    return {
        "cross_architecture": cross,
        "n_architectures": n_arch,
        "decision": decision,
        "framework": str(facts.get("framework_name") or FRAMEWORK_NAME),
        "n_tested": n_tested,
        "n_collapsed": n_collapsed,
        "tested_count": tested,
        "collapsed_count": k,
        "collapsed": collapsed,
        "dominant": dominants.pop() if len(dominants) == 1 else None,
        "p_value": p_value,
        "cohens_d": cohens_d,
        "strongest_tex": f"\\texttt{{{tex_escape(strongest)}}}" if strongest else None,
        "strongest_md": code(strongest) if strongest else None,
        "models_tested_tex": _join([f"\\texttt{{{tex_escape(m)}}}" for m in models_tested]),
        "models_tested_md": _join([code(m) for m in models_tested]),
        "fa_newcommand": FA_NEWCOMMAND,
        "fa_providecommand": FA_PROVIDECOMMAND,
    }


def render_abstract(env: Environment | None, facts: Mapping[str, Any]) -> tuple[str, str]:
    """The abstract as ``(tex, md)`` from ``paper/abstract.{tex,md}.j2``; see :func:`abstract_context`."""
    context = abstract_context(facts)
    env = with_paper_filters(env or make_env())
    tex = env.get_template(ABSTRACT_TEX).render(context)
    md = env.get_template(ABSTRACT_MD).render(context)
    return tex, md


# --------------------------------------------------------------------------- from the evidence to the draft


def compile_latex(out: Path) -> int:
    """Where a TeX engine is installed: every section must compile inside a minimal document (1) or not (0)."""
    body = "\\documentclass{article}\\usepackage{booktabs,graphicx,amsmath}\\begin{document}" + "".join(
        f"\\input{{{name}}}" for name in ("abstract", "method", "results")) + "\\end{document}"
    (out / "draft.tex").write_text(body, encoding="utf-8")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "draft.tex"], cwd=out,
                          capture_output=True, timeout=120)
    return int(done.returncode == 0)


def abstract_facts(ev: RunEvidence, metric: str) -> dict:
    """The abstract's placeholders (models, p-value, Cohen's d, key finding) from the statistics run."""
    names = lambda tag: [n for n in ev.tags.get(tag, "none").split(",") if n != "none"]  # noqa: E731
    verdict = lambda model, field: schema.model_key(model, "verdict", field)  # noqa: E731
    collapsed = names(schema.COLLAPSED_MODELS)
    strongest = max(collapsed, key=lambda n: float(ev.m(verdict(n, "imbalance")).value)) if collapsed else None
    return {
        "decision": ev.tags.get(schema.DECISION, "NEED_MORE_DATA"),
        "n_models_tested": ev.m("gates/models_tested"), "n_models_collapsed": ev.m("gates/models_collapsed"),
        "models_tested": names(schema.TESTED_MODELS),
        "collapsed_models": [{"name": n, "dominant": ev.params[verdict(n, "dominant")], "imbalance": ev.m(verdict(n, "imbalance"))}
                             for n in collapsed],
        "strongest_model": strongest,
        "n_architectures": ev.m("gates/architectures_counted"), "min_architectures": ev.m("gates/min_models_tested"),
        "p_value": ev.m(verdict(strongest, "p_holm")) if strongest else None,  # the deciding test, Holm-corrected
        "cohens_d": ev.m(schema.model_key(strongest, metric, "cohen_d")) if strongest else None,
    }
