"""Injection suite: user-supplied text in every field that reaches a report stays text.

A cycle is logged with a hostile payload planted in each field a report
shows (mission title, action titles, criterion descriptions, reasons and
mitigations from libraries, a model family, a skipped image's file name and
reason, the gate rule, a narrative paragraph), then rendered by the real
environment. The payload carries a newline, a fake heading, raw HTML, a
backtick, a table pipe and a fake bold verdict; none of them may become markup.
"""
from __future__ import annotations

import base64

import importlib.util
import re
from pathlib import Path

import pandas as pd
import pytest

from tasks import evidence
from tasks.reporting import rendering
from tasks.reporting import views as reporting
from tasks.reporting.markdown import code, md_text
from tasks.reporting.views import first_screen, inline_images

_SPEC = importlib.util.spec_from_file_location("logged_cycle", Path(__file__).resolve().parents[2] / "agents" / "conftest.py")
logged_cycle = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(logged_cycle)  # the agents' cycle logger: the runs and tags the stages write

PAYLOAD = "x\n# Fake heading\n<script>alert(1)</script> <img src=x onerror=alert(1)> `tick` | pipe **GO** [link](http://e.vil)\r\n> quote"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, str]:
    week1 = logged_cycle.load_mission(logged_cycle.DEFAULT_MISSION)
    hostile = week1.model_copy(update={
        "title": PAYLOAD,
        "actions": tuple(a.model_copy(update={
            "title": f"{a.title} {PAYLOAD}",
            "acceptance": tuple(c.model_copy(update={"description": f"{c.description} {PAYLOAD}"}) for c in a.acceptance),
        }) for a in week1.actions),
    })
    cycle_id = logged_cycle.log_cycle(hostile, statuses={"T5": ("Failed", f"library error: {PAYLOAD}")},
                         blocked={"openclip-vit-b-32": f"weights missing {PAYLOAD}"})
    tree = evidence.read_run(cycle_id)
    diag, stats_run = tree.child("fa.action_id", "T4"), tree.child("fa.action_id", "T3")
    log = evidence.RunLog(diag.run_id)
    log.metrics({"dataset_samples_skipped": 1})
    log.table(pd.DataFrame({"sample_id": ["s1"], "source": [f"img{PAYLOAD}.jpg"], "reason": [PAYLOAD]}), "dataset_skipped.csv")
    evidence.RunLog(stats_run.run_id).tags({"fa.rule": PAYLOAD})
    for child in tree.child("fa.action_id", "T1").children:
        evidence.RunLog(child.run_id).tags({"fa.family": PAYLOAD, "fa.mitigation": PAYLOAD})
    view = reporting.cycle_view(hostile, evidence.read_run(cycle_id))
    view["narrative"] = type("N", (), {"accepted": True, "text": PAYLOAD})()
    folder = tmp_path_factory.mktemp("reports")
    paths = reporting.render_reports(rendering.make_env(), view, folder)
    return {str(p.relative_to(folder)): p.read_text(encoding="utf-8") for p in paths}


def _headings(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"\s{0,3}#{1,6}\s", line)]


def _outside_code(text: str) -> str:
    """What a Markdown viewer interprets: the text with inline code spans (shown verbatim) removed."""
    return re.sub(r"(?<!\\)`[^`\n]*(?<!\\)`", "``", text)


def test_the_payload_reached_every_report(rendered):
    assert all("onerror" in text for name, text in rendered.items() if "handoff" in name or "summaries" in name)


def test_no_raw_html_survives(rendered):
    for name, text in rendered.items():
        assert not re.search(r"<\s*(script|img)", _outside_code(text), re.IGNORECASE), name


def test_no_fake_heading_quote_or_link(rendered):
    for name, text in rendered.items():
        assert not any("Fake heading" in h for h in _headings(_outside_code(text))), name
        assert not re.search(r"^\s*> quote", text, re.MULTILINE), name
        assert not re.search(r"(?<!\\)\]\(http://e\.vil\)", _outside_code(text)), name


def test_table_rows_keep_their_cells(rendered):
    for name, text in rendered.items():
        table: list[int] = []
        for line in text.splitlines() + [""]:
            if line.startswith("|"):
                table.append(len(re.findall(r"(?<!\\)\|", line)))
            elif table:
                assert len(set(table)) == 1, (name, table)
                table = []


def test_no_fake_bold_verdict_and_every_code_span_is_closed(rendered):
    for name, text in rendered.items():
        assert not re.search(r"(?<!\\)\*\*GO\*\*(?!\[\^)", _outside_code(text)), name
        for line in text.splitlines():
            assert len(re.findall(r"(?<!\\)`", line)) % 2 == 0, (name, line)


def test_filters_escape_each_dangerous_character():
    assert md_text("a\nb|c`d*e#f<g>h[i]j&k") == "a b\\|c\\`d\\*e\\#f&lt;g&gt;h\\[i\\]j&amp;k"
    assert code("a\r\nb`c|d") == "`a b'c\\|d`"
    cited = f"0.5 [{'a' * 32}:share]"
    assert md_text(f"<b>{cited}") == f"&lt;b&gt;{cited}"  # a citation inside user text is kept, then verified


def test_every_template_value_is_escaped_unless_a_filter_made_it(tmp_path):
    from jinja2 import FileSystemLoader

    env = rendering.make_env()
    env.loader = FileSystemLoader(tmp_path)
    (tmp_path / "t.md.j2").write_text("{{ raw }} {{ raw|code }}\n")
    assert env.get_template("t.md.j2").render(raw="<b>|") == "&lt;b&gt;\\| `<b>\\|`\n"


# ------------------------------------------------------------------ the one-screen summary and embedded plots
HANDOFF = "# Title\n\n- **Decision: GO**\n\n## Recommendation: GO\n\n![forest](../results/forest_plot.png)\n![gone](missing.png)\n"


def test_first_screen_stops_at_the_first_detail_section():
    assert first_screen(HANDOFF) == "# Title\n\n- **Decision: GO**\n"


def test_relative_png_links_become_data_uris_and_missing_files_stay_links(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "forest_plot.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "handoff").mkdir()
    out = inline_images(HANDOFF, tmp_path / "handoff")
    encoded = base64.b64encode(b"\x89PNG fake").decode()
    assert f"![forest](data:image/png;base64,{encoded})" in out
    assert "![gone](missing.png)" in out
