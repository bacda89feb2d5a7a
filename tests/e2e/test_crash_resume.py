"""A cycle killed with SIGKILL mid-diagnostics, then re-run: finished work reused, nothing stuck, nothing duplicated."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("zoo-text-dominant", "zoo-balanced", "zoo-vision-dominant")


def _cli(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(Path(sys.executable).parent / "fusionaudit"), *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _model_runs(client: MlflowClient, exp_id: str, cycle_run: str) -> list:
    """Model runs under the diagnostics action of one cycle."""
    actions = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{cycle_run}' and tags.`fa.action_id` = 'T4'")
    if not actions:
        return []
    return client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{actions[0].info.run_id}'")


def test_sigkill_mid_diagnostics_then_rerun_resumes(tmp_path):
    env = {**os.environ, "FUSIONAUDIT_REPORTS": str(tmp_path / "reports"), "OMP_NUM_THREADS": "1",
           "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),  # a cache of its own: only this test's work is reused
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    args = ("cycle", "run", "--models", ",".join(MODELS), "--samples", "24")
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])

    first = _cli(env, *args)
    deadline = time.monotonic() + 600
    cycle_run = exp_id = None
    try:
        while time.monotonic() < deadline:  # kill as soon as one model's diagnostics are logged, before the last
            assert first.poll() is None, f"cycle ended before it could be killed:\n{first.stdout.read()}"
            exp = client.get_experiment_by_name("week1-attention-collapse")
            if exp:
                exp_id = exp.experiment_id
                cycles = client.search_runs([exp_id], "tags.`fa.kind` = 'cycle'")
                if cycles:
                    cycle_run = cycles[0].info.run_id
                    done = [r for r in _model_runs(client, exp_id, cycle_run) if r.data.tags.get("fa.status") == "Completed"]
                    if done:
                        break
            time.sleep(0.3)
        else:
            pytest.fail("no model diagnostic finished within 600 s")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the CLI and everything it started (Prefect's local server too)
        first.wait()
    finished_before = {r.data.tags["fa.model"] for r in _model_runs(client, exp_id, cycle_run)
                       if r.data.tags.get("fa.status") == "Completed"}
    assert 0 < len(finished_before) < len(MODELS), finished_before
    assert client.get_run(cycle_run).info.status == "RUNNING"  # what a SIGKILL leaves behind

    second = _cli(env, *args)  # the reaping note reaches the terminal without --verbose
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0, out

    # The killed cycle's runs are closed, none stays RUNNING.
    assert "of a killed cycle as KILLED" in out
    killed = client.get_run(cycle_run)
    assert killed.info.status == "KILLED"
    running = client.search_runs([exp_id], "attributes.status = 'RUNNING'")
    assert running == [], [r.info.run_name for r in running]

    # The re-run reused every finished model and recomputed only the rest.
    cycles = client.search_runs([exp_id], "tags.`fa.kind` = 'cycle'", order_by=["attributes.start_time DESC"])
    assert len(cycles) == 2
    rerun = cycles[0].info.run_id
    models = {r.data.tags["fa.model"]: r for r in _model_runs(client, exp_id, rerun)}
    assert sorted(models) == sorted(MODELS)  # one run per model: no duplicate evidence
    for name, run in models.items():
        assert run.data.tags["fa.cached"] == ("true" if name in finished_before else "false"), name
        assert run.info.status == "FINISHED"

    # The handoff cites only the re-run's completed work, and verifies.
    handoff = Path(re.search(r"Handoff: (\S+)", out).group(1))
    text = handoff.read_text(encoding="utf-8")
    assert cycle_run not in text
    verify = subprocess.run([str(Path(sys.executable).parent / "fusionaudit"), "verify", str(handoff)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
