"""Prefect's local API for one CLI command: started first, ready by the time torch is imported, gone with the CLI.

Without ``PREFECT_API_URL`` Prefect starts a temporary server itself, but only
when the flow starts (after some 30 s of imports), with a short start-up
limit, and as a child that outlives a CLI killed with SIGKILL. Started here
instead, the server boots while the CLI imports torch, Prefect and MLflow;
the kernel stops it when the CLI dies (``PR_SET_PDEATHSIG`` on Linux), and
the CLI stops it on a normal exit. The server is the one Prefect would start
(its own ASGI app under uvicorn, UI off) on the same database.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT_S = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 120))
_PR_SET_PDEATHSIG = 1


class LocalAPIError(RuntimeError):
    """The local API did not come up: one message naming the limit and the way around it."""


STARTUP_FAILURE = 3  # uvicorn's exit code when the app's start-up fails, e.g. two servers migrating one new database
RESTARTS = 3


@dataclass
class LocalAPI:
    url: str
    process: subprocess.Popen
    log: Path
    restart: Callable[[], subprocess.Popen] | None = None  # the same server again, on the same port

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Block until ``/health`` answers; most of the start-up has passed while the caller imported.

        A start-up failure (exit 3) is retried on the same port, as Prefect does for its own temporary server: two
        CLIs started at once on a fresh Prefect home race to create its database, and the loser's retry finds it made.
        """
        deadline, restarts = time.monotonic() + timeout_s, 0
        while time.monotonic() < deadline:
            if self.process.poll() == STARTUP_FAILURE and self.restart is not None and restarts < RESTARTS:
                restarts += 1
                self.process = self.restart()
                continue
            if self.process.poll() is not None:
                raise LocalAPIError(f"Prefect's local API exited with code {self.process.returncode} while starting "
                                    f"(its log: {self.log}); start a server (`prefect server start`) and set PREFECT_API_URL")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise LocalAPIError(f"Prefect's local API did not start within {timeout_s:.0f} s (its log: {self.log}): raise "
                            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start a server (`prefect server start`) "
                            "and set PREFECT_API_URL")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_local_api() -> LocalAPI | None:
    """Start Prefect's API for this process unless one is configured or Prefect is already in use here.

    Sets ``PREFECT_API_URL`` for this process (Prefect reads it on first import), so it must run before Prefect
    is imported; in a process that already imported Prefect (a test harness, a notebook) its settings stand.
    """
    if os.environ.get("PREFECT_API_URL") or "prefect" in sys.modules:
        return None
    port = _free_port()
    log = Path(tempfile.gettempdir()) / f"fusionaudit-prefect-api-{os.getpid()}.log"
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    def launch() -> subprocess.Popen:
        with log.open("a") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "error", "--lifespan", "on"],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with(os.getpid()))

    log.write_text("")
    api = LocalAPI(f"http://127.0.0.1:{port}/api", launch(), log, launch)
    os.environ["PREFECT_API_URL"] = api.url
    atexit.register(api.stop)
    return api


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with(parent: int):
    """Runs in the child before exec: SIGTERM when the parent dies, however it dies (Linux; elsewhere atexit only)."""
    def arrange() -> None:
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(0)
    return arrange
