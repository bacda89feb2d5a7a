"""Verdicts a reviewer would sign, through the real CLI: planted truths, controls, and drafts that claim no more.

Planted-truth models (tasks/adapters/zoo/planted.py) have closed-form shares; run as
the subjects of a mission, each must get the verdict its truth implies, and the
cycle the decision those verdicts imply. The default cycle on a machine without
weights must end NEED_MORE_DATA with the zoo's controls passing.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from tasks import evidence
from tasks.adapters.zoo import planted
from tasks.data.synthetic import make_synthetic
from tasks.evidence import schema
from tasks.stats.analysis import analyze

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SAMPLES = 32
# Sentences that generalise across architectures (DESIGN.md: never from controls or too few external architectures).
CROSS_ARCHITECTURE = re.compile(r"across (the )?(vision-language )?architectures|not confined to a single architecture|"
                                r"field-wide|recurs across|widespread across", re.I)


def _run(args: list[str]) -> str:
    """``fusionaudit cycle run`` as a user runs it: the installed command, in its own process (own Prefect API)."""
    command = [str(Path(sys.executable).parent / "fusionaudit"), "cycle", "run", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=os.environ | {"COLUMNS": "400"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return re.search(r"Handoff: (\S+)", done.stdout).group(1)


def _stats_run(handoff: str) -> evidence.RunEvidence:
    cycle_id = Path(handoff).parent.parent.name
    from tasks.evidence.cycles import list_cycles

    run_id = next(c.run_id for m in ("planted-truth", "week1-attention-collapse") for c in list_cycles(m) if c.cycle_id == cycle_id)
    return evidence.read_run(run_id).child("fa.action_id", "T3")


def _reports_verify_and_claim_nothing_across_architectures(handoff: str) -> None:
    report_dir = Path(handoff).parent.parent
    reports = sorted(report_dir.rglob("*.md")) + sorted(report_dir.rglob("*.tex"))
    # related work cites papers, not evidence: it has nothing for verify to re-read (verify would say so)
    md = [p for p in reports if p.suffix == ".md" and not p.name.startswith("related_work")]
    result = CliRunner().invoke(app, ["verify", *map(str, md)])
    assert result.exit_code == 0, result.output
    for path in reports:
        text = re.sub(r"`[^`]*`", "", path.read_text(encoding="utf-8"))  # names and the mission's question, not claims
        if path.name.startswith("related_work"):
            continue  # the literature's own findings, quoted with their citation keys
        assert not CROSS_ARCHITECTURE.search(text), (path.name, CROSS_ARCHITECTURE.search(text).group(0))


@pytest.fixture(scope="module")
def planted_cycle(tmp_path_factory):
    mission = yaml.safe_load((ROOT / "missions" / "week1.yaml").read_text())
    mission["id"] = "planted-truth"
    mission["models"] = [{"name": f"planted-{v.replace('_', '-')}", "adapter": "planted", "source": v} for v in planted.VARIANTS]
    mission["alternatives"] = []
    path = tmp_path_factory.mktemp("planted") / "mission.yaml"
    path.write_text(yaml.safe_dump(mission))
    return _run(["--mission", str(path), "--samples", str(SAMPLES)])


def _truth_labels() -> dict[str, str]:
    """The labels the closed-form shares imply, from the same statistics (the shares are exact, not measured)."""
    samples = make_synthetic(SAMPLES, seed=0)
    rows = [(f"planted-{v.replace('_', '-')}", s.sample_id, "truth",
             planted.closed_form_share(v, planted.image_feature(s.image), planted.text_feature(s.caption), s.sample_id))
            for v in planted.VARIANTS for s in samples]
    analysis = analyze(pd.DataFrame(rows, columns=["model", "sample_id", "metric", "value"]), n_resamples=999)
    return {r.model: r.call.label for r in analysis.per_model}


def test_each_planted_truth_gets_the_verdict_its_truth_implies(planted_cycle):
    stats = _stats_run(planted_cycle)
    calls = {n: stats.params[schema.model_key(f"planted-{n.replace('_', '-')}", "call")] for n in planted.VARIANTS}
    assert calls["image_only"] == "collapsed" and stats.params["planted-image-only/verdict/dominant"] == "image"
    assert calls["text_only"] == "collapsed" and stats.params["planted-text-only/verdict/dominant"] == "text"
    assert calls["constant"] == "collapsed"  # share 0.9 on every sample: zero variance, decided by the exact test
    assert stats.params["planted-constant/verdict/test"].startswith("exact sign test")
    assert calls["multiplicative"] == "balanced"  # share exactly 0.5 on every sample
    assert calls["mixed"] == "per-sample dominance" and stats.params["planted-mixed/direction"] == "mixed"
    assert {f"planted-{n.replace('_', '-')}": c for n, c in calls.items()} == _truth_labels()


def test_the_planted_cycle_decides_what_the_truths_imply(planted_cycle):
    stats = _stats_run(planted_cycle)
    # three subjects collapse (image only, text only, constant) of six tested: GO under gates 3 / 2
    assert stats.tags["fa.decision"] == "GO" and stats.m("gates/models_collapsed").value == 3
    assert stats.m("gates/architectures_counted").value == 1  # one adapter: no claim across architectures
    handoff = Path(planted_cycle).read_text()
    assert "## Recommendation: **GO**" in handoff and "Test that decided" in handoff
    _reports_verify_and_claim_nothing_across_architectures(planted_cycle)


def test_default_cycle_without_weights_needs_more_data_and_its_controls_pass():
    handoff_path = _run(["--samples", str(SAMPLES)])
    handoff = Path(handoff_path).read_text()
    stats = _stats_run(handoff_path)
    assert stats.tags["fa.decision"] == "NEED_MORE_DATA" and stats.m("gates/models_tested").value == 0
    assert "## Recommendation: **NEED_MORE_DATA**" in handoff
    assert re.search(r"\*\*NEED_MORE_DATA\*\*\[\^e\d+\]: 0\[\^e\d+\] external model\(s\) tested", handoff)
    assert re.search(r"7\[\^e\d+\] external model\(s\) Blocked", handoff)
    controls = handoff.split("## Controls (never counted by the gates)")[1].split("##")[0]
    for name in ("zoo-text-dominant", "zoo-balanced", "zoo-vision-dominant"):
        row = next(line for line in controls.splitlines() if line.startswith(f"| `{name}`"))
        assert "**pass**" in row, row
    _reports_verify_and_claim_nothing_across_architectures(handoff_path)
