"""The statistics stage against a real SQLite MLflow store: the one decision, controls and the borderline Holm case."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.planner import plan_next
from tasks import evidence
from tasks.actions import Cycle
from tasks.diagnostics.run import DiagnosticResult
from tasks.evidence import schema
from tasks.mission import load_mission
from tasks.reporting import rendering
from tasks.reporting import views as reporting
from tasks.stages.statistics import statistics_stage

MISSION = Path(__file__).resolve().parents[4] / "missions" / "week1.yaml"
EXTERNAL = ("clip-vit-b-32", "align-base", "blip-itm-base")


def _result(name: str, shares) -> DiagnosticResult:
    ps = pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(shares))], "modality_shapley_v": shares})
    return DiagnosticResult(name, ps, pd.DataFrame(columns=["sample_id", "layer", "layer_index"]),
                            pd.DataFrame(columns=["sample_id", "reason"]))


def _cycle(tmp_path, names) -> Cycle:
    m = load_mission(MISSION)
    mission = m.model_copy(update={"models": tuple(m.model(n) for n in names), "alternatives": ()})
    exp = evidence.ensure_experiment(f"stages-{uuid.uuid4().hex[:8]}")
    run = evidence.start_run(exp, "cycle", tags={"fa.kind": "cycle", "fa.cycle_id": "c1", "fa.mission": mission.id})
    return Cycle(mission, str(MISSION), "c1", exp, run.run_id, tmp_path, datetime.now(timezone.utc))


@pytest.fixture(scope="module")
def borderline(tmp_path_factory):
    """Three external models whose share is 1 on each of 6 samples: the exact sign test gives p = 2 / 2**6 = 0.031
    < 0.05, Holm across the three gives 0.094 > 0.05. A calibration model (text-dominant, share 0) is a control."""
    cycle = _cycle(tmp_path_factory.mktemp("borderline"), EXTERNAL + ("zoo-text-dominant",))
    results = {n: _result(n, np.ones(6)) for n in EXTERNAL} | {"zoo-text-dominant": _result("zoo-text-dominant", np.zeros(6))}
    outcome = statistics_stage.fn(cycle, cycle.mission.for_stage("statistics"), results)
    return cycle, evidence.read_run(cycle.run_id), evidence.read_run(outcome.run_id, with_children=False)


def test_borderline_holm_case_stage_planner_and_handoff_agree(borderline):
    cycle, tree, stats_run = borderline
    for name in EXTERNAL:
        key = partial(schema.model_key, name, "verdict")  # key("p") -> <name>/verdict/p
        raw, holm = stats_run.m(key("p")).value, stats_run.m(key("p_holm")).value
        assert raw == pytest.approx(2 / 2**6) and raw < 0.05  # raw: below alpha
        assert holm == pytest.approx(3 * 2 / 2**6) and holm > 0.05  # Holm: above
        assert stats_run.m(key("collapsed")).value == 0
        assert stats_run.params[key("test")].startswith("exact sign test")
    stage = stats_run.tags["fa.decision"]
    planner = plan_next(cycle.mission, tree).decision.decision
    view = reporting.cycle_view(cycle.mission, tree)
    handoff = rendering.make_env().get_template("handoff/execution_progress_update.md.j2").render(**view)
    shown = re.search(r"^- \*\*Decision\*\*: \*\*(\w+)\*\*", handoff, re.M).group(1)
    assert stage == planner == view["decision"] == shown == "PIVOT"
    assert "gates changed" not in handoff


def test_controls_are_analysed_never_counted_and_never_in_the_holm_family(borderline):
    _, tree, stats_run = borderline
    assert stats_run.m("collapse_family_size").value == 3 and stats_run.m("gates/models_tested").value == 3
    # the control's own p decides its verdict (not Holm-corrected: it is not in the family)
    assert np.isnan(stats_run.m("zoo-text-dominant/verdict/p_holm").value)
    assert stats_run.params["zoo-text-dominant/role"] == "calibration"
    assert stats_run.params["zoo-text-dominant/control/planted"] == "text"
    # its own exact p (0.031) is below alpha, where the same data Holm-corrected among the subjects would not be
    assert stats_run.m("zoo-text-dominant/verdict/collapsed").value == 1
    assert stats_run.m("zoo-text-dominant/control/passed").value == 1 and stats_run.tags["fa.trustworthy"] == "true"


def test_no_external_model_is_need_more_data_with_the_zoo_passing(tmp_path):
    zoo = ("zoo-text-dominant", "zoo-balanced", "zoo-vision-dominant")
    cycle = _cycle(tmp_path, zoo + ("clip-vit-b-32",))
    rng = np.random.default_rng(0)
    results = {"zoo-text-dominant": _result("zoo-text-dominant", np.clip(0.03 + rng.normal(0, 0.01, 32), 0, 1)),
               "zoo-balanced": _result("zoo-balanced", np.clip(0.5 + rng.normal(0, 0.02, 32), 0, 1)),
               "zoo-vision-dominant": _result("zoo-vision-dominant", np.ones(32))}  # constant: decided exactly
    outcome = statistics_stage.fn(cycle, cycle.mission.for_stage("statistics"), results)
    stats_run = evidence.read_run(outcome.run_id, with_children=False)
    assert stats_run.tags["fa.decision"] == "NEED_MORE_DATA" and stats_run.tags["fa.blocked"] == "clip-vit-b-32"
    assert stats_run.tags["fa.trustworthy"] == "true"
    assert [stats_run.m(schema.model_key(n, "control", "passed")).value for n in zoo] == [1, 1, 1]
    assert stats_run.params["zoo-vision-dominant/call"] == "collapsed"
    view = reporting.cycle_view(cycle.mission, evidence.read_run(cycle.run_id))
    handoff = rendering.make_env().get_template("handoff/execution_progress_update.md.j2").render(**view)
    assert "## Controls (never counted by the gates)" in handoff and handoff.count("**pass**") == 3
    assert re.search(r"\*\*NEED_MORE_DATA\*\*\[\^e\d+\]: 0\[\^e\d+\] external model\(s\) tested", handoff)
    assert re.search(r"1\[\^e\d+\] external model\(s\) Blocked", handoff)
