"""The abstract draft and the citation filters (tasks/reporting/paper.py)."""
from __future__ import annotations

import re

import pytest
from jinja2 import DictLoader, Environment, StrictUndefined

from tasks.evidence.cited import Cited
from tasks.reporting.paper import (
    FA_NEWCOMMAND,
    CollapsedModel,
    abstract_context,
    cite_md,
    cite_tex,
    render_abstract,
    with_paper_filters,
)
from tasks.reporting.rendering import TEMPLATES, make_env

RUN_A, RUN_B, RUN_C = "a1" * 16, "b2" * 16, "c3" * 16
MODELS = ["openai/clip-vit-base-patch32", "Salesforce/blip-itm-base-coco", "zoo_text", "zoo_vision"]
FIELD_WIDE = "recurs across the architectures"

FA = re.compile(r"\\fa\{([^{}]*)\}\{([^{}]*)\}")
MD_CITED = re.compile(r"(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?|nan) \[([0-9a-f]{32}):([^\]\s]+)\]")


def facts(decision: str, collapsed: int) -> dict:
    models = [
        CollapsedModel("openai/clip-vit-base-patch32", "text", Cited(0.9134, RUN_B, "imbalance")),
        CollapsedModel("zoo_vision", "vision", Cited(0.97, RUN_C, "imbalance")),
        CollapsedModel("zoo_text", "text", Cited(0.99, RUN_C, "imbalance_text")),
    ][:collapsed]
    return {
        "decision": decision,
        "n_models_tested": Cited(4, RUN_A, "n_models_tested"),
        "n_models_collapsed": Cited(collapsed, RUN_A, "n_models_collapsed"),
        "collapsed_models": models,
        "models_tested": MODELS,
        "p_value": Cited(3.2e-12, RUN_B, "p_ttest") if collapsed else None,
        "cohens_d": Cited(1.8734, RUN_B, "cohens_d") if collapsed else None,
        "strongest_model": MODELS[0] if collapsed else None,
    }


def without_names(text: str) -> str:
    for name in MODELS:
        text = text.replace(name, "").replace(name.replace("_", r"\_"), "")
    return text


def tex_body(tex: str) -> str:
    return tex.split(r"\begin{abstract}", 1)[1].split(r"\end{abstract}", 1)[0]


# --------------------------------------------------------------------------- filters


def test_cite_md_is_formatted_value_then_citation():
    assert cite_md(Cited(0.73412, RUN_A, "mcs")) == f"0.734 [{RUN_A}:mcs]"
    assert cite_md(Cited(0.73412, RUN_A, "mcs"), ".2f") == f"0.73 [{RUN_A}:mcs]"
    assert cite_md(Cited(500, RUN_A, "n_samples", kind="param")) == f"500 [{RUN_A}:params/n_samples]"


def test_cite_tex_wraps_value_and_citation_in_fa():
    assert cite_tex(Cited(0.73412, RUN_A, "mcs")) == rf"\fa{{0.734}}{{{RUN_A}:mcs}}"
    assert cite_tex(Cited(2.1e-7, RUN_A, "p_ttest")) == rf"\fa{{2.10e-07}}{{{RUN_A}:p_ttest}}"
    assert cite_tex(Cited(500, RUN_A, "n", kind="param")) == rf"\fa{{500}}{{{RUN_A}:params/n}}"
    assert cite_tex(Cited("50%_x", RUN_A, "label", kind="param")) == rf"\fa{{50\%\_x}}{{{RUN_A}:params/label}}"


@pytest.mark.parametrize("bare", [0.73, 4, "0.73", None])
def test_filters_refuse_a_number_without_citation(bare):
    with pytest.raises(TypeError, match="citation"):
        cite_md(bare)
    with pytest.raises(TypeError, match="citation"):
        cite_tex(bare)


def test_cite_tex_refuses_citation_that_would_break_latex():
    with pytest.raises(ValueError):
        cite_tex(Cited(1.0, RUN_A, "bad%key"))


def test_filters_in_a_strict_environment_and_caller_env_untouched():
    env = Environment(loader=DictLoader({"t": "{{ x | cite_md }} / {{ x | cite_tex }}"}),
                      undefined=StrictUndefined)
    out = with_paper_filters(env).get_template("t").render(x=Cited(1.5, RUN_A, "d"))
    assert out == rf"1.500 [{RUN_A}:d] / \fa{{1.500}}{{{RUN_A}:d}}"
    assert "cite_md" not in env.filters  # the overlay did not leak into the caller's environment
    with pytest.raises(Exception, match="undefined"):
        with_paper_filters(env).get_template("t").render()


# --------------------------------------------------------------------------- abstract


@pytest.mark.parametrize("decision, collapsed", [
    ("GO", 2), ("GO", 3), ("PIVOT", 1), ("PIVOT", 0), ("NEED_MORE_DATA", 1), ("NEED_MORE_DATA", 0)])
def test_every_number_carries_its_citation(decision, collapsed):
    tex, md = render_abstract(make_env(), facts(decision, collapsed))

    # Markdown: each number is "<value> [run_id:key]"; nothing numeric is left once they are removed
    # (model ids are code spans, which the verifier skips).
    body = md.split("## Abstract", 1)[1]
    assert MD_CITED.search(body)
    assert not re.search(r"\d", re.sub(r"`[^`\n]*`", "", MD_CITED.sub("", body)))

    # LaTeX: each number is \fa{value}{run_id:key}; nothing numeric is left once they are removed.
    inner = tex_body(tex)
    assert FA.search(inner)
    assert not re.search(r"\d", without_names(FA.sub("", inner)))
    for _, ref in FA.findall(inner):
        assert re.fullmatch(r"[0-9a-f]{32}:[\w/]+", ref)

    # The two twins cite the same numbers, in the same order.
    assert [(v, f"{r}:{k}") for v, r, k in MD_CITED.findall(body)] == FA.findall(inner)


def test_tex_defines_the_fa_macro():
    tex, _ = render_abstract(make_env(), facts("GO", 2))
    head = tex.split(r"\begin{abstract}", 1)[0]
    assert f"%   {FA_NEWCOMMAND}" in head
    assert "\n" + r"\providecommand{\fa}[2]{#1}" + "\n" in head
    assert tex.count("{") == tex.count("}")
    assert tex.rstrip().endswith(r"\end{abstract}")


def test_values_and_citations_are_the_facts():
    tex, md = render_abstract(make_env(), facts("GO", 2))
    assert f"validate it across 4 [{RUN_A}:n_models_tested] models" in md
    assert f"(p = 3.20e-12 [{RUN_B}:p_ttest])" in md
    assert f"Cohen's d = 1.873 [{RUN_B}:cohens_d]" in md
    assert f"`openai/clip-vit-base-patch32` (text-dominant, imbalance 0.913 [{RUN_B}:imbalance])" in md
    assert f"`zoo_vision` (image-dominant, imbalance 0.970 [{RUN_C}:imbalance])" in md
    assert rf"$p = \fa{{3.20e-12}}{{{RUN_B}:p_ttest}}$" in tex
    assert r"\texttt{zoo\_vision} (image-dominant" in tex


def test_wording_follows_the_decision():
    # a pattern across architectures only with enough distinct external architectures counted by the gates
    enough = {"n_architectures": Cited(3, RUN_A, "gates/architectures_counted"),
              "min_architectures": Cited(3, RUN_A, "gates/min_models_tested")}
    go_tex, go_md = render_abstract(make_env(), facts("GO", 2) | enough)
    assert FIELD_WIDE in go_md and FIELD_WIDE in go_tex
    assert "not confined to a single architecture" in go_md
    for few in ({}, enough | {"n_architectures": Cited(1, RUN_A, "gates/architectures_counted")}):
        tex, md = render_abstract(make_env(), facts("GO", 2) | few)
        assert FIELD_WIDE not in md + tex and "not confined" not in md + tex
        assert "present among the external models we tested" in md
    assert "the features of one modality dominate" in go_md  # text and image collapse: no single modality

    for decision, collapsed in [("PIVOT", 1), ("PIVOT", 0), ("NEED_MORE_DATA", 1), ("NEED_MORE_DATA", 0)]:
        tex, md = render_abstract(make_env(), facts(decision, collapsed))
        for text in (tex, md):
            assert FIELD_WIDE not in text and "not confined" not in text
            assert "exhibit attention collapse" not in text

    _, pivot = render_abstract(make_env(), facts("PIVOT", 1))
    assert "focused case study of `openai/clip-vit-base-patch32`" in pivot
    assert "Collapse is not widespread" in pivot and "toward text features" in pivot
    assert "models collapses," in pivot

    _, mixed = render_abstract(make_env(), facts("PIVOT", 2))  # one text-, one image-dominant
    assert "models collapse, each toward one modality;" in mixed and FIELD_WIDE not in mixed

    _, none = render_abstract(make_env(), facts("PIVOT", 0))
    assert "we make no claim of attention collapse" in none and "p =" not in none

    _, preliminary = render_abstract(make_env(), facts("NEED_MORE_DATA", 1))
    assert "not yet sufficient" in preliminary and "we make no such claim" in preliminary

    # one model under GO: no claim that collapse spans architectures
    one = facts("GO", 1)
    _, md = render_abstract(make_env(), one)
    assert FIELD_WIDE not in md and "not confined" not in md
    assert "where text features dominate" in md


def test_render_without_caller_filters_and_default_env():
    # no filters, the one environment's whitespace rules (tasks/reporting/rendering.py)
    bare_env = Environment(loader=make_env(TEMPLATES).loader, undefined=StrictUndefined,
                           keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    assert render_abstract(bare_env, facts("GO", 2)) == render_abstract(None, facts("GO", 2))
    assert "cite_tex" not in bare_env.filters


def test_facts_accept_mappings_and_normalise_modality():
    f = facts("PIVOT", 1)
    f["collapsed_models"] = [{"name": "m", "dominant": "Visual", "imbalance": Cited(0.9, RUN_B, "imb")}]
    ctx = abstract_context(f)
    assert ctx["collapsed"][0] == CollapsedModel("m", "image", Cited(0.9, RUN_B, "imb"))
    assert ctx["dominant"] == "image"


@pytest.mark.parametrize("change, error", [
    ({"decision": "MAYBE"}, ValueError),
    ({"n_models_tested": 4}, TypeError),                                    # a bare number
    ({"p_value": 0.001}, TypeError),
    ({"n_models_collapsed": Cited(1, RUN_A, "n_models_collapsed")}, ValueError),  # names 2 models
    ({"n_models_collapsed": Cited(2.5, RUN_A, "n")}, ValueError),
    ({"n_models_tested": Cited(1, RUN_A, "n_models_tested")}, ValueError),  # fewer tested than collapsed
    ({"models_tested": MODELS[:3]}, ValueError),
    ({"cohens_d": None}, ValueError),
    ({"collapsed_models": [CollapsedModel("a", "text"), {"name": "b", "dominant": "audio"}]}, ValueError),
])
def test_contradictory_or_uncited_facts_are_refused(change, error):
    f = {**facts("GO", 2), **change}
    with pytest.raises(error):
        render_abstract(make_env(), f)


def test_go_without_any_collapsed_model_is_refused():
    with pytest.raises(ValueError, match="GO"):
        render_abstract(make_env(), facts("GO", 0))


def test_missing_fact_is_named():
    f = facts("GO", 2)
    del f["n_models_tested"]
    with pytest.raises(KeyError, match="n_models_tested"):
        render_abstract(make_env(), f)
