"""BibTeX parsing, library merging and the related-work draft (tasks/reporting/literature.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tasks.reporting.literature import (
    CATEGORIES,
    PROJECT_BIB,
    BibParseError,
    UnknownCitation,
    latex_to_text,
    load_library,
    md_literal,
    parse_bibtex,
    render_related_work,
    split_top_level,
    tex_escape,
)
from tasks.reporting.rendering import make_env

TRICKY = r"""
Free text between entries is a comment in BibTeX, even with an @ sign in it.

@comment{ @article{ghost, title = {must not be parsed}} }
@preamble{ "\newcommand{\noop}[1]{}" }
@string{ acl = "Association for {Computational} Linguistics" }

@Article{nested2020,
  author  = "Doe, Jane and {Acme Research Lab} and van der Berg, Jan",
  title   = {The {BLIP} and {Q-{Former}} story: {a} "quoted" word},
  journal = acl # { Journal},
  year    = 2020,
  month   = jul,
  pages   = "1--10",
  note    = "a {"} inside braces",
  keywords = {Multimodal Fusion Strategies},
}

@misc(parens2021,
  title = {Parenthesised entry},
  author = {Bi{\'n}kowski, Miko{\l}aj},
  year = {2021}
)
"""


def test_parse_nested_braces_quotes_macros_and_comments():
    entries = parse_bibtex(TRICKY, "tricky.bib")
    assert [e.key for e in entries] == ["nested2020", "parens2021"]  # @comment's ghost is skipped
    e = entries[0]
    assert e.type == "article"
    assert e.get("title") == 'The {BLIP} and {Q-{Former}} story: {a} "quoted" word'
    assert e.title == 'The BLIP and Q-Former story: a "quoted" word'
    assert e.get("journal") == "Association for {Computational} Linguistics Journal"
    assert e.get("year") == "2020"
    assert e.get("month") == "July"
    assert e.get("pages") == "1--10"
    assert e.get("note") == 'a {"} inside braces'
    assert e.line == 8
    assert e.source == Path("tricky.bib")
    assert e.last_names == ["Doe", "Acme Research Lab", "van der Berg"]
    assert e.author_year() == "Doe et al., 2020"
    assert e.category == "Multimodal Fusion Strategies"
    p = entries[1]
    assert p.type == "misc"
    assert p.last_names == ["Bińkowski"]
    assert p.author_year() == "Bińkowski, 2021"


@pytest.mark.parametrize("text, where", [
    ("@article{broken, title = {unclosed}", ":1:"),
    ("\n\n@article{, title = {x}}", ":3:"),
    ("@article{k, title = {x},", ":1:"),
    ("@article{k, title {x}}", ":1:"),
    ('@article{k, title = "open}', ":1:"),
    ("@article{k, title = {x} year = {2020}}", ":1:"),
])
def test_malformed_bibtex_names_file_and_line(text, where):
    with pytest.raises(BibParseError) as err:
        parse_bibtex(text, "bad.bib")
    assert "bad.bib" in str(err.value) and where in str(err.value)


def test_two_authors_others_and_editor_fallbacks():
    (bare,) = parse_bibtex("@misc{keyonly}")
    assert bare.key == "keyonly" and bare.fields == {} and bare.author_year() == "keyonly, n.d."
    (two, others, edited) = parse_bibtex(r"""
@inproceedings{a, author = {Abnar, Samira and Zuidema, Willem}, year = {2020}, title = {T}}
@inproceedings{b, author = {Jaegle, Andrew and others}, year = {2021}, title = {T}}
@book{c, editor = {Kuhn, Harold W.}, title = {Contributions}, year = {1953}}
""")
    assert two.author_year() == "Abnar and Zuidema, 2020"
    assert others.author_year() == "Jaegle et al., 2021"
    assert edited.author_year() == "Kuhn, 1953"


def test_text_helpers():
    assert latex_to_text(r"Kar{\'e}n Bi\'{n}kowski {\"o} \c{c} G{\"u}l --- x--y \& {\L}ukasz \emph{d}") == \
        "Karén Bińkowski ö ç Gül — x–y & Łukasz d"
    assert split_top_level("A and {B and C} and D", r"\s+and\s+") == ["A", "{B and C}", "D"]
    assert tex_escape("zoo_text 50% #1 {a}") == r"zoo\_text 50\% \#1 \{a\}"
    assert md_literal("Layer 2: BLIP-2 at 1/2") == "`Layer 2:` `BLIP-2` `at 1/2`"  # a bare number never stands alone in a span


def test_project_bib_is_complete_and_categorised():
    library = load_library()
    assert library.sources == (PROJECT_BIB,)
    assert library.warnings == []
    expected = {
        "radford2021learning", "jia2021scaling", "alayrac2022flamingo", "li2022blip", "li2023blip2",
        "liu2023visual", "kim2021vilt", "parcalabescu2023mmshap", "abnar2020quantifying",
        "chefer2021generic", "chen2024image", "peng2022balanced", "wang2020makes", "shapley1953value",
        "jain2019attention", "holm1979simple", "efron1987better", "cohen1988statistical",
        "schuirmann1987comparison",
    }
    assert expected <= set(library)
    for entry in library.values():
        keywords = [k.strip() for k in entry.get("keywords").split(",")]
        assert len(keywords) == 1 and keywords[0] in CATEGORIES, entry.key
        assert entry.get("title") and entry.get("author") and entry.get("year").isdigit(), entry.key
        assert entry.get("booktitle") or entry.get("journal") or entry.get("publisher"), entry.key
        annote = entry.get("annote")
        # a sentence without its period and without numbers (a model name such as BLIP-2 is fine)
        assert annote and not annote.endswith(".") and not re.search(r"(?<![\w-])\d", annote), entry.key
    assert {e.category for e in library.values()} == set(CATEGORIES)
    assert library["radford2021learning"].author_year() == "Radford et al., 2021"
    assert library["abnar2020quantifying"].author_year() == "Abnar and Zuidema, 2020"
    assert library["alayrac2022flamingo"].last_names[22] == "Bińkowski"


def test_user_bib_merges_after_project_and_wins_with_a_warning(tmp_path):
    user = tmp_path / "mine.bib"
    user.write_text(
        "@article{radford2021learning, author = {Me, Myself}, title = {My CLIP notes}, year = {2024},"
        " journal = {Notes}, keywords = {Vision-Language Pre-training}}\n"
        "@article{mine2024, author = {Me, Myself}, title = {Mine}, year = {2024}, journal = {Notes},"
        " keywords = {Diagnostic Tools for Deep Learning}}\n")
    library = load_library([PROJECT_BIB, user])
    assert library.sources == (PROJECT_BIB, user)
    assert library["radford2021learning"].title == "My CLIP notes"
    assert library["radford2021learning"].source == user
    assert "mine2024" in library and "li2023blip2" in library
    assert len(library.warnings) == 1
    warning = library.warnings[0]
    assert "radford2021learning" in warning and "mine.bib" in warning and "references.bib" in warning
    # the replaced entry keeps its place, so the section order is stable
    assert list(library).index("radford2021learning") < list(library).index("li2023blip2")


def test_missing_bib_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.bib"):
        load_library([tmp_path / "nope.bib"])


def test_unknown_key_names_the_key_and_the_files_searched(tmp_path):
    user = tmp_path / "mine.bib"
    user.write_text("@misc{mine2024, title = {Mine}, year = {2024}}\n")
    library = load_library([PROJECT_BIB, user])
    with pytest.raises(UnknownCitation) as err:
        render_related_work(library, {CATEGORIES[0]: ["radford2021learning", "nosuchkey2099"]}, make_env())
    message = str(err.value)
    assert "nosuchkey2099" in message and str(PROJECT_BIB) in message and str(user) in message
    assert err.value.keys == ("nosuchkey2099",)
    with pytest.raises(UnknownCitation):
        library.resolve(["mine2024", "nosuchkey2099"])


def test_related_work_default_four_categories_every_key_resolved():
    library = load_library()
    tex, md = render_related_work(library, None, make_env())

    headings = re.findall(r"\\paragraph\{(.+?)\.\}", tex)
    assert headings == list(CATEGORIES)
    cited = re.findall(r"\\cite\{([^}]+)\}", tex)
    assert sorted(cited) == sorted(library)  # every entry cited once, nothing unresolved
    for key in cited:  # each citation sits in its category's paragraph
        paragraph = tex.split(f"\\cite{{{key}}}")[0].rsplit("\\paragraph{", 1)[1]
        assert paragraph.startswith(library[key].category)
    assert tex.count("{") == tex.count("}")
    assert r"\section{Related Work}" in tex

    assert re.findall(r"^### (.+)$", md, re.M) == [*CATEGORIES, "References"]
    for key, entry in library.items():
        assert f"[`{entry.author_year()}`](#{key})" in md
        assert f'<a id="{key}"></a>' in md
    assert "\\" not in md and "{" not in md


def test_related_work_markdown_has_no_bare_numbers():
    """Years and pages are not evidence: they stay in code spans, which the verifier skips."""
    _, md = render_related_work(load_library(), None, make_env())
    outside_code = re.sub(r"`[^`\n]*`", "", md)
    prose = re.sub(r'\]\(#[^)\s]+\)|<a id="[^"]+"></a>', "", outside_code)  # citation keys are names
    assert not re.search(r"\d", prose)


def test_related_work_explicit_grouping_keeps_order_and_skips_empty():
    library = load_library()
    keys = {"Our baselines": ["kim2021vilt", "radford2021learning"], CATEGORIES[1]: []}
    tex, md = render_related_work(library, keys, make_env())
    assert re.findall(r"\\paragraph\{(.+?)\.\}", tex) == ["Our baselines"]
    assert tex.index(r"\cite{kim2021vilt}") < tex.index(r"\cite{radford2021learning}")
    assert "### Our baselines" in md


def test_entries_without_category_or_annote(tmp_path):
    user = tmp_path / "mine.bib"
    user.write_text("@misc{plain2024, author = {Roe, Richard}, title = {A {Plain} Entry}, year = {2024}}\n")
    library = load_library([user])
    tex, md = render_related_work(library, None, make_env())
    assert "plain2024" not in tex  # no known category: left out of the default grouping
    tex, md = render_related_work(library, {CATEGORIES[3]: ["plain2024"]}, make_env())
    assert r"\emph{A {Plain} Entry}~\cite{plain2024}." in tex
    assert "*A Plain Entry* ([`Roe, 2024`](#plain2024))." in md
