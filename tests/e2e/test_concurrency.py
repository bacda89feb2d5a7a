"""Two cycles started at once against one MLflow SQLite store and one Prefect server: nothing lost to locking.

Each concurrent cycle must log exactly as many metrics as one cycle run alone
afterwards with the same arguments, in the same store; a write dropped or
failed under SQLite's single-writer lock would show as a smaller count (or a
non-zero exit), and both handoffs must verify.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARGS = ("cycle", "run", "--models", "zoo-balanced,zoo-text-dominant", "--samples", "16")
EXPERIMENT = "week1-attention-collapse"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_health(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def prefect_server(tmp_path):
    """``prefect server start`` on a free loopback port, stopped (children included) after the test."""
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"}
    log = tmp_path / "prefect-server.log"
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api"
        _wait_health(f"{url}/health", proc, log)
        yield url
    finally:
        tree = [proc.pid, *(c.pid for c in _children(proc.pid))]
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _, alive = psutil.wait_procs([p for p in map(_proc, tree) if p], timeout=20)
        for p in alive:
            p.kill()


def _proc(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _children(pid: int) -> list[psutil.Process]:
    p = _proc(pid)
    return p.children(recursive=True) if p else []


def _cli(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "fusionaudit"), *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _metric_count(client: MlflowClient, exp_id: str, cycle_run: str) -> int:
    """Metrics logged by the cycle run and every run whose parent chain leads to it."""
    runs = client.search_runs([exp_id], max_results=10_000)
    parent = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in runs}

    def in_tree(rid: str | None) -> bool:
        while rid is not None:
            if rid == cycle_run:
                return True
            rid = parent.get(rid)
        return False

    return sum(len(r.data.metrics) for r in runs if in_tree(r.info.run_id))


def _cycle_run(client: MlflowClient, exp_id: str, out: str) -> str:
    cycle_id = re.search(r"reports/[^/\s]+/([^/\s]+)/handoff", out).group(1)
    found = client.search_runs([exp_id], f"tags.`fa.cycle_id` = '{cycle_id}'")
    assert len(found) == 1, (cycle_id, found)
    return found[0].info.run_id


def test_two_concurrent_cycles_lose_no_evidence(tmp_path, prefect_server):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PREFECT_API_URL": prefect_server,
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "FUSIONAUDIT_REPORTS": str(tmp_path / "reports"), "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results")}
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])

    both = [_cli(env, *ARGS), _cli(env, *ARGS)]
    outs = []
    try:
        for proc in both:
            out, _ = proc.communicate(timeout=1200)
            outs.append(out)
    finally:
        for proc in both:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    for proc, out in zip(both, outs):
        assert proc.returncode == 0, out[-4000:]

    reference = subprocess.run([str(BIN / "fusionaudit"), *ARGS], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=1200)
    assert reference.returncode == 0, reference.stdout[-4000:] + reference.stderr[-2000:]

    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    counts = [_metric_count(client, exp_id, _cycle_run(client, exp_id, out)) for out in outs]
    expected = _metric_count(client, exp_id, _cycle_run(client, exp_id, reference.stdout))
    print(f"metrics per cycle tree: concurrent {counts}, sequential reference {expected}")
    assert expected > 0
    assert counts == [expected, expected]

    for out in outs:
        handoff = re.search(r"Handoff: (\S+)", out).group(1)
        verify = subprocess.run([str(BIN / "fusionaudit"), "verify", handoff], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
        assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
        assert "NOT VERIFIED" not in verify.stdout
