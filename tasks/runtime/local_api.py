"""Prefect's local API for the CLI: started first, ready by the time torch is imported, reused by the next run.

Without ``PREFECT_API_URL`` Prefect starts a temporary server itself, but only
when the flow starts (after some 30 s of imports), with a short start-up
limit, and as a child that outlives a CLI killed with SIGKILL. Started here
instead, the server boots while the CLI imports torch, Prefect and MLflow. It
is the app Prefect would start (UI off) on the same database
(``tasks/runtime/local_api_server.py``).

It stays up ``FUSIONAUDIT_LOCAL_API_LINGER_S`` seconds (300) after its last
client, and the next CLI on the same Prefect home finds it through a record
file there and skips the start-up: a warm cycle pays no server boot. With
``FUSIONAUDIT_LOCAL_API_LINGER_S=0`` the server is the run's own: the kernel
stops it when the CLI dies (``PR_SET_PDEATHSIG`` on Linux), and the CLI stops
it on a normal exit.
"""
from __future__ import annotations

import atexit
import ctypes
import json
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
LINGER_DEFAULT_S = 300.0
RECORD = "fusionaudit-local-api.json"  # in the Prefect home: the lingering server's address for the next CLI
_PR_SET_PDEATHSIG = 1


class LocalAPIError(RuntimeError):
    """The local API did not come up: one message naming the limit and the way around it."""


STARTUP_FAILURE = 3  # uvicorn's exit code when the app's start-up fails, e.g. two servers migrating one new database
RESTARTS = 3


@dataclass
class LocalAPI:
    url: str
    process: subprocess.Popen | None  # None: a server an earlier CLI left up, reused
    log: Path
    restart: Callable[[], subprocess.Popen] | None = None  # the same server again, on the same port
    linger_s: float = 0.0  # how long it stays up after its last client; 0: it stops with this CLI

    @property
    def reused(self) -> bool:
        return self.process is None

    def describe(self) -> str:
        """Where the cycle's orchestration lives, for the CLI's header."""
        if self.reused:
            return f"Prefect's local API at {self.url} (left up by an earlier run, reused)"
        if self.linger_s > 0:
            return (f"Prefect's local API at {self.url} (started now; it stays up {self.linger_s:.0f} s after its last "
                    "client for the next run: FUSIONAUDIT_LOCAL_API_LINGER_S=0 stops it with this run)")
        return f"Prefect's local API at {self.url} (started for this run, stops with it)"

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Block until ``/health`` answers; most of the start-up has passed while the caller imported.

        A start-up failure (exit 3) is retried on the same port, as Prefect does for its own temporary server: two
        CLIs started at once on a fresh Prefect home race to create its database, and the loser's retry finds it made.
        """
        deadline, restarts = time.monotonic() + timeout_s, 0
        while time.monotonic() < deadline:
            if self.reused:
                if _answers(self.url):
                    return
                raise LocalAPIError(f"Prefect's local API at {self.url}, left up by an earlier run, stopped answering; "
                                    "run the command again (it starts a new one)")
            if self.process.poll() == STARTUP_FAILURE and self.restart is not None and restarts < RESTARTS:
                restarts += 1
                self.process = self.restart()
                continue
            if self.process.poll() is not None:
                raise LocalAPIError(f"Prefect's local API exited with code {self.process.returncode} while starting "
                                    f"(its log: {self.log}); start a server (`prefect server start`) and set PREFECT_API_URL")
            if _answers(self.url):
                return
            time.sleep(0.2)
        self.stop()
        raise LocalAPIError(f"Prefect's local API did not start within {timeout_s:.0f} s (its log: {self.log}): raise "
                            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start a server (`prefect server start`) "
                            "and set PREFECT_API_URL")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_local_api() -> LocalAPI | None:
    """Prefect's API for this process (reused or started) unless one is configured or Prefect is already in use here.

    Sets ``PREFECT_API_URL`` for this process (Prefect reads it on first import), so it must run before Prefect
    is imported; in a process that already imported Prefect (a test harness, a notebook) its settings stand.
    """
    if os.environ.get("PREFECT_API_URL") or "prefect" in sys.modules:
        return None
    linger = linger_s()
    api = (_left_up() if linger > 0 else None) or _launch(linger)
    os.environ["PREFECT_API_URL"] = api.url
    return api


def linger_s() -> float:
    raw = os.environ.get("FUSIONAUDIT_LOCAL_API_LINGER_S", "")
    try:
        return max(float(raw), 0.0) if raw.strip() else LINGER_DEFAULT_S
    except ValueError:
        raise LocalAPIError(f"FUSIONAUDIT_LOCAL_API_LINGER_S={raw!r} is not a number of seconds: "
                            "set it to 0 (the API stops with each run) or, say, 300") from None


def record_path() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser() / RECORD


def _identity() -> dict[str, str]:
    """What a reused server must share with this CLI: the interpreter, and the Prefect that built its database."""
    from importlib.metadata import version

    return {"python": sys.executable, "prefect": version("prefect")}


def _left_up() -> LocalAPI | None:
    """The server an earlier CLI left up on this Prefect home, if it still answers and matches this CLI."""
    path = record_path()
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in _identity().items()):
        return None
    url = str(record.get("url", ""))
    if not url.startswith("http://127.0.0.1:") or not _answers(url):
        return None
    return LocalAPI(url, None, Path(str(record.get("log", ""))), linger_s=float(record.get("linger_s", 0)))


def _launch(linger: float) -> LocalAPI:
    port = _free_port()
    log = Path(tempfile.gettempdir()) / f"fusionaudit-prefect-api-{os.getpid()}.log"
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    record = record_path()
    command = [sys.executable, "-m", "tasks.runtime.local_api_server", "--port", str(port), "--linger", str(linger)]
    if linger > 0:
        command += ["--record", str(record)]

    # Lingering: its own session, so it outlives this CLI and leaves by itself when idle; else it dies with the CLI.
    detach = {"start_new_session": True} if linger > 0 else {"preexec_fn": _die_with(os.getpid())}

    def launch() -> subprocess.Popen:
        with log.open("a") as out:
            return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    **detach)

    log.write_text("")
    api = LocalAPI(f"http://127.0.0.1:{port}/api", launch(), log, launch, linger)
    if linger > 0:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"url": api.url, "pid": api.process.pid, "log": str(log), "linger_s": linger,
                                      **_identity()}))
    else:
        atexit.register(api.stop)
    return api


def _answers(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


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
