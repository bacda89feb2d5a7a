"""Every architecture of the Week-1 mission through the whole cycle (offline: Blocked; random init: diagnosed),
and a COCO-format dataset with a corrupt image through the cycle."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agents.quality_officer import assess
from tasks import evidence
from tasks.data.fixtures import write_coco_fixture

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURES = ["clip-vit-b-32", "align-base", "blip-itm-base", "blip2-itm-vit-g", "idefics-9b", "llava-1.5-7b"]


def _children(result, action: str) -> dict[str, evidence.RunEvidence]:
    action_run = evidence.read_run(result["run_id"]).child("fa.action_id", action)
    return {c.tags["fa.model"]: c for c in action_run.children if c.tags.get("fa.kind") == "model"}


def test_offline_each_pretrained_model_is_blocked_with_its_own_mitigation(prefect_api):
    from flows.week1 import week1_cycle

    state = week1_cycle(models=[*ARCHITECTURES, "zoo-text-dominant", "zoo-vision-dominant"], samples=32, return_state=True)
    result = state.result()
    opened = _children(result, "T1")
    for name in ARCHITECTURES:
        run = opened[name]
        assert run.tags["fa.status"] == "Blocked", name
        assert "hf download" in run.tags["fa.mitigation"] and "models--" in run.tags["fa.mitigation"], run.tags
    assert len({opened[n].tags["fa.mitigation"] for n in ARCHITECTURES}) == len(ARCHITECTURES)  # each its own
    assert set(_children(result, "T4")) == {"zoo-text-dominant", "zoo-vision-dominant"}  # the cycle went on
    assert assess([Path(result["handoff"])]).verified


def test_with_random_init_every_architecture_runs_through_the_cycle(prefect_api):
    from flows.week1 import week1_cycle

    state = week1_cycle(models=ARCHITECTURES, samples=32, allow_random_init=True, return_state=True)
    result = state.result()
    diagnosed = _children(result, "T4")
    assert sorted(diagnosed) == sorted(ARCHITECTURES)
    assert all(r.tags["fa.status"] == "Completed" and r.m("samples_scored").value == 32 for r in diagnosed.values())
    assert all(r.tags["fa.random_init"] == "true" for r in _children(result, "T1").values())
    stats = evidence.read_run(result["run_id"]).child("fa.action_id", "T3")
    assert stats.tags["fa.excluded"].split(",") == sorted(ARCHITECTURES) and stats.m("gates/models_tested").value == 0
    assert result["decision"] == "NEED_MORE_DATA"  # RANDOM-INIT results are never counted
    handoff = Path(result["handoff"]).read_text(encoding="utf-8")
    assert handoff.count("RANDOM-INIT |") >= len(ARCHITECTURES) and assess([Path(result["handoff"])]).verified


def test_coco_fixture_with_a_corrupt_image_runs_stratified_and_reports_the_skip(prefect_api, tmp_path):
    from flows.week1 import week1_cycle

    coco = write_coco_fixture(tmp_path / "coco", n_images=40, categories=4, corrupt=1)
    mission = yaml.safe_load((ROOT / "missions" / "week1.yaml").read_text())
    mission["dataset"] = {"kind": "coco", "annotations": str(coco.captions), "images": str(coco.images),
                          "instances": str(coco.instances), "samples": 32, "seed": 0}
    path = tmp_path / "coco_mission.yaml"
    path.write_text(yaml.safe_dump(mission), encoding="utf-8")

    state = week1_cycle(mission_path=str(path), models=["zoo-balanced", "zoo-text-dominant"], return_state=True)
    result = state.result()
    diag = evidence.read_run(result["run_id"]).child("fa.action_id", "T4")
    assert diag.params["dataset"] == "coco" and diag.m("dataset_samples").value == 32
    skipped = evidence.read_table(diag.run_id, "dataset_skipped.csv")
    corrupt_ids = {f"coco-{i}" for i in coco.corrupt}
    assert diag.m("dataset_samples_skipped").value == len(skipped) >= 1
    assert set(skipped["sample_id"]) & corrupt_ids and skipped["reason"].str.contains("truncated").any()
    used = evidence.read_table(_children(result, "T4")["zoo-balanced"].run_id, "per_sample.csv")
    categories = [coco.categories[int(s.removeprefix("coco-"))] for s in used["sample_id"]]
    counts = {c: categories.count(c) for c in set(categories)}
    assert len(counts) == 4 and max(counts.values()) - min(counts.values()) <= 1  # stratified across categories
    assert assess([Path(result["handoff"])]).verified
