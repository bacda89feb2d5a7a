"""A Week-1 cycle's parent run on a SQLite MLflow store of the test's own, for the stages' unit tests."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from tasks import evidence
from tasks.actions import Cycle
from tasks.evidence import schema
from tasks.mission import load_mission

MISSION = Path(__file__).resolve().parents[4] / "missions" / "week1.yaml"


@pytest.fixture
def cycle(tmp_path, monkeypatch) -> Cycle:
    """The Week-1 mission's cycle run in ``tmp_path/mlflow.db``; its reports go to ``tmp_path/reports``."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mission = load_mission(MISSION)
    experiment = evidence.ensure_experiment(mission.id)
    run = evidence.start_run(experiment, "cycle c1", tags={schema.KIND: "cycle", schema.CYCLE_ID: "c1", schema.MISSION: mission.id})
    return Cycle(mission, str(MISSION), "c1", experiment, run.run_id, tmp_path / "reports", datetime.now(timezone.utc))
