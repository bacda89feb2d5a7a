"""The one cycle start every mission kind uses: the parent run's tags, the report folder, the mission as run."""
from __future__ import annotations

from pathlib import Path

from tasks import evidence
from tasks.evidence import schema
from tasks.mission import load_mission
from tasks.stages._common import keep_mission_as_run, open_cycle

MISSION = Path(__file__).resolve().parents[4] / "missions" / "week1.yaml"


def test_a_cycle_start_tags_the_run_and_keeps_the_mission(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("FUSIONAUDIT_REPORTS", str(tmp_path / "reports"))
    mission = load_mission(MISSION)
    week1 = open_cycle(mission.id, tags={schema.CYCLE_NUMBER: "2"})
    keep_mission_as_run(week1.run, mission, week1.report_dir)
    probing = open_cycle(mission.id, kind="probing")
    tags = evidence.read_run(week1.run.run_id, with_children=False).tags
    assert tags[schema.KIND] == "cycle" and tags[schema.CYCLE_ID] == week1.cycle_id and tags[schema.MISSION] == mission.id
    assert tags[schema.CYCLE_NUMBER] == "2" and schema.MISSION_KIND not in tags and schema.PID in tags
    assert evidence.read_run(probing.run.run_id, with_children=False).tags[schema.MISSION_KIND] == "probing"
    assert week1.experiment == probing.experiment and week1.cycle_id != probing.cycle_id
    assert week1.report_dir == (tmp_path / "reports" / mission.id / week1.cycle_id).resolve()
    assert (week1.report_dir / "mission.yaml").is_file()
