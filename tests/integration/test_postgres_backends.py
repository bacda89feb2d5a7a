"""docs/prefect-server.md §3 on loopback: a Prefect server and an MLflow tracking server on Debian's PostgreSQL.

A throw-away cluster (initdb, trust auth, 127.0.0.1 only) holds both databases; a Week-1 cycle runs through
the CLI against both servers, its handoff verifies against the MLflow server, and the rows are read back from
PostgreSQL itself, so the test fails if either server quietly used SQLite. CI installs `postgresql` and sets
FUSIONAUDIT_REQUIRE_POSTGRES=1, so there the test runs instead of skipping.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_BIN = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as Debian's `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def postgres():
    if PG_BIN is None:
        if os.environ.get("FUSIONAUDIT_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL not found under /usr/lib/postgresql: apt-get install postgresql")
        pytest.skip("PostgreSQL not installed (`apt-get install postgresql`; .ci/run does)")
    data = Path(tempfile.mkdtemp(prefix="fusionaudit-pg-"))  # not under pytest's 0700 root-owned tmp: postgres must enter it
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    subprocess.run(_as_postgres([f"{PG_BIN}/initdb", "-D", str(data / "db"), "-U", "postgres", "--auth=trust"]),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres([f"{PG_BIN}/pg_ctl", "-D", str(data / "db"), "-l", str(data / "pg.log"), "-w", "start",
                                 "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1"]), check=True, capture_output=True)
    try:
        for db in ("prefect", "mlflow"):
            subprocess.run([f"{PG_BIN}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", db], check=True)
        yield port
    finally:
        subprocess.run(_as_postgres([f"{PG_BIN}/pg_ctl", "-D", str(data / "db"), "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def _sql(port: int, db: str, query: str) -> str:
    done = subprocess.run([f"{PG_BIN}/psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", db, "-tAc", query],
                          check=True, capture_output=True, text=True)
    return done.stdout.strip()


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def test_a_cycle_on_prefect_and_mlflow_servers_backed_by_postgresql(postgres, tmp_path):
    from tasks.evidence import schema

    prefect_port, mlflow_port = _free_port(), _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{postgres}/prefect",
           "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
           "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}", "FUSIONAUDIT_REPORTS": str(tmp_path / "reports"),
           "OMP_NUM_THREADS": "1"}
    logs = {name: tmp_path / f"{name}.log" for name in ("prefect", "mlflow")}
    servers = [
        subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
                         env=env, stdout=logs["prefect"].open("w"), stderr=subprocess.STDOUT, start_new_session=True),
        subprocess.Popen([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
                          "--backend-store-uri", f"postgresql://postgres@127.0.0.1:{postgres}/mlflow",
                          "--artifacts-destination", str(tmp_path / "mlartifacts")],
                         env=env, stdout=logs["mlflow"].open("w"), stderr=subprocess.STDOUT, start_new_session=True),
    ]
    try:
        _wait(f"http://127.0.0.1:{prefect_port}/api/health", servers[0], logs["prefect"])
        _wait(f"http://127.0.0.1:{mlflow_port}/health", servers[1], logs["mlflow"])
        done = subprocess.run([str(BIN / "fusionaudit"), "cycle", "run", "--models", "zoo-balanced", "--samples", "8"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert f"orchestration: http://127.0.0.1:{prefect_port}/api" in done.stdout  # the server, not a local API
        handoff = re.search(r"Handoff: (\S+)", done.stdout).group(1)
        verify = subprocess.run([str(BIN / "fusionaudit"), "verify", handoff], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
        assert "VERIFIED" in verify.stdout and "NOT VERIFIED" not in verify.stdout, verify.stdout + verify.stderr

        # the rows are in PostgreSQL: the cycle's flow run, and its MLflow runs with the cycle's tag
        assert _sql(postgres, "prefect", "SELECT count(*) FROM flow_run f JOIN flow ON f.flow_id = flow.id "
                                         "WHERE flow.name = 'week1-cycle' AND f.state_type = 'COMPLETED'") == "1"
        assert int(_sql(postgres, "mlflow", "SELECT count(*) FROM runs")) > 5
        assert _sql(postgres, "mlflow", f"SELECT count(*) FROM tags WHERE key = '{schema.KIND}' AND value = 'cycle'") == "1"
    finally:
        for proc in servers:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in servers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
