"""With MLflow on a closed port, every command that reads evidence fails in seconds with one line and exit 2.

Run as the user runs them: the installed ``fusionaudit`` script in a fresh
process, so start-up (imports) counts toward the limit.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent / "fusionaudit"
LIMIT_S = 10


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: nothing listens there


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("r") / "handoff.md"
    path.write_text(f"share 0.5[^e1]\n\n[^e1]: run {'a' * 32}, key share\n")
    return path


# `models list` reads neither MLflow nor Prefect (adapters and weight folders only): nothing to fail on here.
@pytest.mark.parametrize("args", [["verify", "{report}"], ["cycle", "list"], ["cycle", "run"], ["report", "show"]])
def test_each_command_fails_fast_with_one_line(args, report, tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "FUSIONAUDIT_REPORTS": str(tmp_path / "reports")}
    t0 = time.monotonic()
    done = subprocess.run([str(BIN), *[a.format(report=report) for a in args]], env=env, capture_output=True, text=True,
                          timeout=60)
    took = time.monotonic() - t0
    if args[0] == "report":  # reads the reports folder only: no cycles there is its one-line answer
        assert done.returncode == 2 and took < LIMIT_S and len(done.stderr.splitlines()) == 1, done.stderr
        return
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert took < LIMIT_S, took
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and f"MLFLOW_TRACKING_URI {uri} is not reachable" in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout
