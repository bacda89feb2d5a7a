"""The CLI's own Prefect API with FUSIONAUDIT_LOCAL_API_LINGER_S=0 (the tests' setting): it serves the cycle, and it does not outlive a CLI killed with SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "fusionaudit")


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return {**env, "FUSIONAUDIT_REPORTS": str(tmp_path / "reports"), "PREFECT_HOME": str(tmp_path / "prefect"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "OMP_NUM_THREADS": "1"}


def _api_server(cli: psutil.Process) -> psutil.Process | None:
    for child in cli.children(recursive=True):
        try:
            if "tasks.runtime.local_api_server" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_the_local_api_dies_with_a_cli_killed_by_sigkill(tmp_path):
    cli = subprocess.Popen([CLI, "cycle", "run", "--models", "zoo-balanced", "--samples", "8"], cwd=ROOT, env=_env(tmp_path),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    server = None
    try:
        deadline = time.monotonic() + 120
        while server is None and time.monotonic() < deadline:
            assert cli.poll() is None, cli.stdout.read()
            server = _api_server(psutil.Process(cli.pid))
            time.sleep(0.2)
        assert server is not None, "the CLI started no Prefect API of its own"
        cli.send_signal(signal.SIGKILL)  # the CLI alone, as the OOM killer or `kill -9 <pid>` would
        cli.wait()
        gone, alive = psutil.wait_procs([server], timeout=30)
        assert server in gone and not alive, f"the Prefect API (pid {server.pid}) outlived the killed CLI"
    finally:
        try:
            os.killpg(cli.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if server is not None and server.is_running():
            server.kill()


def test_the_cli_stops_its_api_when_the_cycle_ends(tmp_path):
    done = subprocess.run([CLI, "cycle", "run", "--models", "zoo-balanced", "--samples", "8"], cwd=ROOT, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Prefect's local API at http://127.0.0.1:" in done.stdout  # the run says where its orchestration lived
    assert "| ERROR   |" not in done.stdout + done.stderr, "Blocked runs are reported by the CLI, not as log lines"
    assert not _servers_of(tmp_path / "prefect"), "the CLI's Prefect API still runs after the CLI exited"


def _servers_of(prefect_home: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if ("tasks.runtime.local_api_server" in " ".join(p.cmdline())
                    and p.environ().get("PREFECT_HOME") == str(prefect_home)):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
