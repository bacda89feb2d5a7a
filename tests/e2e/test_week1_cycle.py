"""The real Week-1 flow end to end: Prefect's local API, MLflow on SQLite, the real tiny models."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from agents.quality_officer import verify_files
from tasks import evidence
from tasks.evidence import schema

pytestmark = pytest.mark.slow
MODELS = ["openclip-vit-b-32", "zoo-text-dominant", "zoo-balanced", "zoo-vision-dominant"]


@pytest.fixture(scope="module")
def two_cycles(prefect_api):
    from flows.week1 import week1_cycle

    first = week1_cycle(models=MODELS, samples=40, return_state=True)
    second = week1_cycle(models=MODELS, samples=40, return_state=True)
    return first, second


def _stats_run(result) -> evidence.RunEvidence:
    tree = evidence.read_run(result["run_id"])
    return tree.child("fa.action_id", "T3")


def test_cycle_completes_with_a_summary_message(two_cycles):
    state, _ = two_cycles
    assert state.is_completed()
    assert re.fullmatch(r"5 actions completed, 1 blocked, 1 failed; decision NEED_MORE_DATA; handoff VERIFIED", state.message), state.message


def test_planted_collapse_is_found_and_balance_is_not_flagged(two_cycles):
    result = two_cycles[0].result()
    stats = _stats_run(result)
    m = "modality_shapley_v"
    assert stats.m(f"zoo-text-dominant/verdict/collapsed").value == 1
    assert stats.m(schema.model_key("zoo-text-dominant", m, "t_p")).value < 0.05
    assert stats.params["zoo-text-dominant/verdict/dominant"] == "text"
    assert stats.m(f"zoo-vision-dominant/verdict/collapsed").value == 1
    assert stats.m(f"zoo-balanced/verdict/collapsed").value == 0
    # the zoo is a control: its planted collapse is found, but no external model was tested
    assert stats.tags["fa.decision"] == "NEED_MORE_DATA" and stats.tags["fa.tested"] == "none"


def test_handoff_shows_blocked_openclip_with_its_mitigation_and_the_gate_arithmetic(two_cycles):
    handoff = Path(two_cycles[0].result()["handoff"]).read_text()
    assert re.search(r"Model `openclip-vit-b-32` is \*\*Blocked\*\*\[\^e\d+\] \(T1\)", handoff)
    assert handoff.count("pretrained='laion2b_s34b_b79k'") == 1  # its fetch command once, in the shared block
    assert "huggingface" in handoff and "open_clip" in handoff  # where it looked and how to fetch
    # its alternative was tried in this cycle (T6) and Blocked too: the planner drops it and says why
    assert "## Next cycle (planned from this cycle's evidence)" in handoff
    assert "Model `openclip-vit-b-32` was Blocked in run" in handoff and "no untried alternative is left" in handoff
    assert re.search(r"External models tested: 0\[\^e\d+\]", handoff)
    assert re.search(r"Models with collapse: 0\[\^e\d+\]", handoff)
    assert "## Recommendation: **NEED_MORE_DATA**" in handoff and handoff.count("**pass**") == 3  # the Controls section


def test_every_number_in_every_markdown_report_resolves_in_mlflow(two_cycles):
    result = two_cycles[0].result()
    report_dir = Path(result["handoff"]).parent.parent
    reports = sorted(report_dir.rglob("*.md"))
    names = {p.name for p in reports}
    assert {"execution_progress_update.md", "cycle_summary.md", "zoo-text-dominant_diagnostic_results.md",
            "abstract.md", "related_work.md"} <= names
    findings, checked = verify_files(reports)
    assert findings == []
    assert checked > 100


def test_a_tampered_number_is_caught(two_cycles, tmp_path):
    handoff = Path(two_cycles[0].result()["handoff"]).read_text()
    tampered = re.sub(r"External models tested: 0\[", "External models tested: 4[", handoff)
    assert tampered != handoff
    path = tmp_path / "tampered.md"
    path.write_text(tampered + "\nAn uncited claim: 42 models collapsed.\n")
    findings, _ = verify_files([path])
    assert any("shows 4" in f for f in findings)
    assert any("number 42 has no citation" in f for f in findings)


def test_second_run_reuses_diagnostics_and_writes_a_new_cycle(two_cycles):
    first, second = (s.result() for s in two_cycles)
    assert first["cycle_id"] != second["cycle_id"]
    assert Path(second["handoff"]).exists() and Path(second["handoff"]) != Path(first["handoff"])
    for result, cached in ((first, "false"), (second, "true")):
        diag = evidence.read_run(result["run_id"]).child("fa.action_id", "T4")
        flags = {c.name: c.tags.get("fa.cached") for c in diag.children}
        assert flags == {"zoo-text-dominant": cached, "zoo-balanced": cached, "zoo-vision-dominant": cached}


def test_plots_and_pending_actions_are_written(two_cycles):
    report_dir = Path(two_cycles[0].result()["handoff"]).parent.parent
    plots = report_dir / "results" / "zoo-balanced_attention_plots"
    assert sorted(p.name for p in plots.glob("*.png")) == ["attention_entropy.png", "attention_maps.png", "layer_profile.png",
                                                           "layer_wise_attention.png", "modality_contribution.png"]
    assert (report_dir / "handoff" / "pending_actions.json").read_text().count('"id"') == 7


def test_handoff_is_published_as_a_prefect_markdown_artifact(two_cycles):
    from prefect.artifacts import Artifact

    from tasks.evidence.cited import REFERENCES_HEADING, footnotes_as_references
    from tasks.reporting.views import first_screen, inline_images

    handoff = Path(two_cycles[1].result()["handoff"])
    artifact = Artifact.get("handoff-week1-attention-collapse")
    assert artifact is not None and artifact.type == "markdown"
    # plots embedded (no file beside it); footnotes as a reference list (the Prefect UI renders no footnotes)
    assert artifact.data == footnotes_as_references(inline_images(handoff.read_text(), handoff.parent))
    assert "data:image/png;base64," in artifact.data and "[^" not in artifact.data
    summary = Artifact.get("summary-week1-attention-collapse")
    assert summary.data == footnotes_as_references(first_screen(handoff.read_text()))
    screen = summary.data.split(f"**{REFERENCES_HEADING}**")[0].rstrip()
    assert len(screen.splitlines()) <= 15 and "\\[e1\\]" in screen  # the decision's reference, listed below


def test_report_show_prints_the_latest_handoff(two_cycles):
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["report", "show"])
    assert result.exit_code == 0
    assert two_cycles[1].result()["cycle_id"] in result.output and "## Recommendation: **NEED_MORE_DATA**" in result.output


def test_random_init_results_are_labelled_and_never_counted_by_the_gates(prefect_api, tmp_path):
    """A tiny config of the real open_clip class, no weights anywhere: --allow-random-init runs it, labelled."""
    import json

    import open_clip
    import yaml

    from flows.week1 import DEFAULT_MISSION, week1_cycle

    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}}
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "fa-e2e-tiny-ViT.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "configs")
    mission = yaml.safe_load(DEFAULT_MISSION.read_text())
    mission["models"] = [{"name": "tiny-clip", "adapter": "openclip", "arch": "fa-e2e-tiny-ViT",
                          "source": str(tmp_path / "no-such-checkpoint.pt")},
                         {"name": "zoo-balanced", "adapter": "zoo", "source": "balanced", "calibration": True}]
    mission["alternatives"] = []
    path = tmp_path / "mission.yaml"
    path.write_text(yaml.safe_dump(mission))

    result = week1_cycle(mission_path=str(path), samples=32, allow_random_init=True, return_state=True).result()
    stats = _stats_run(result)
    assert stats.tags["fa.excluded"] == "tiny-clip,zoo-balanced" and stats.tags["fa.tested"] == "none"  # controls
    assert stats.m("tiny-clip/modality_shapley_v/n").value == 32  # analysed, just not counted
    handoff = Path(result["handoff"]).read_text()
    assert "**RANDOM-INIT**" in handoff and "| `tiny-clip` RANDOM-INIT |" in handoff
    report_dir = Path(result["handoff"]).parent.parent
    assert "(RANDOM-INIT)" in (report_dir / "results" / "tiny-clip_diagnostic_results.md").read_text()
    assert "(RANDOM-INIT)" in (report_dir / "summaries" / "cycle_summary.md").read_text()
    assert result["findings"] == []


def test_next_cycle_is_planned_from_the_previous_ones_evidence(two_cycles):
    """Cycle N+1 from cycle N on real runs: blocked models out (their alternatives were tried), gates re-evaluated."""
    import yaml

    from flows.cycle import next_cycle
    from tasks.evidence.cycles import list_cycles

    first = two_cycles[0].result()
    state = next_cycle(previous_cycle=first["cycle_id"], samples=40, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    run = evidence.read_run(result["run_id"], with_children=False)
    assert run.tags["fa.cycle_number"] == "2" and run.tags["fa.previous_cycle_run"] == first["run_id"]
    planned = yaml.safe_load(Path(run.params["mission_path"]).read_text())
    assert [m["name"] for m in planned["models"]] == ["zoo-text-dominant", "zoo-balanced", "zoo-vision-dominant"]
    assert result["decision"] == "NEED_MORE_DATA"  # decided on the new cycle's own statistics: still no external model
    history = {c.cycle_id: c for c in list_cycles("week1-attention-collapse")}
    assert history[result["cycle_id"]].number == 2 and history[result["cycle_id"]].decision == "NEED_MORE_DATA"
