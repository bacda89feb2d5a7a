"""The CLI's own Prefect API: what it says when it cannot start, and when it is left to Prefect."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tasks.runtime.local_api import LocalAPI, LocalAPIError, start_local_api


def _api(tmp_path, code: str) -> LocalAPI:
    proc = subprocess.Popen([sys.executable, "-c", code])
    return LocalAPI("http://127.0.0.1:9/api", proc, tmp_path / "api.log")  # port 9: nothing answers there


def test_a_server_that_never_answers_fails_naming_the_limit_and_the_fix(tmp_path):
    api = _api(tmp_path, "import time; time.sleep(60)")
    with pytest.raises(LocalAPIError) as err:
        api.wait_ready(timeout_s=1)
    message = str(err.value)
    assert "did not start within 1 s" in message and "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in message
    assert "prefect server start" in message and str(tmp_path / "api.log") in message
    assert api.process.poll() is not None  # stopped, not left behind


def test_a_server_that_exits_fails_at_once_with_its_exit_code(tmp_path):
    api = _api(tmp_path, "raise SystemExit(3)")
    with pytest.raises(LocalAPIError, match="exited with code 3"):
        api.wait_ready(timeout_s=60)


def test_a_configured_api_or_an_imported_prefect_is_left_alone(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert start_local_api() is None
    monkeypatch.delenv("PREFECT_API_URL")
    assert "prefect" in sys.modules and start_local_api() is None  # this test session already uses Prefect


def test_a_start_up_failure_is_retried_on_the_same_port(tmp_path):
    """Exit 3 (uvicorn: the app failed to start, e.g. a racing migration) → the same server again; then it answers."""
    import http.server
    import socket
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    launched = []

    def restart():
        server = http.server.HTTPServer(("127.0.0.1", port), Health)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        launched.append(server)
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])

    api = LocalAPI(f"http://127.0.0.1:{port}/api", subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]),
                   tmp_path / "api.log", restart)
    try:
        api.wait_ready(timeout_s=60)
        assert len(launched) == 1
    finally:
        api.stop()
        for server in launched:
            server.shutdown()


_START = ("import sys; from tasks.runtime.local_api import start_local_api; api = start_local_api(); api.wait_ready(); "
          "print(api.url, api.reused, api.process.pid if api.process else '-')")


@pytest.fixture
def lingering(tmp_path):
    """start(linger) runs a fresh CLI-like process that starts (or reuses) the local API: (url, reused, server, record).
    Every server it started is killed at the end."""
    import os

    import psutil

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path / "prefect")}
    servers = []

    def start(linger: int):
        done = subprocess.run([sys.executable, "-c", _START], env=env | {"FUSIONAUDIT_LOCAL_API_LINGER_S": str(linger)},
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        url, reused, pid = done.stdout.split()
        server = psutil.Process(int(pid)) if pid != "-" else None
        servers.extend([server] if server else [])
        return url, reused == "True", server, tmp_path / "prefect" / "fusionaudit-local-api.json"

    yield start
    for server in servers:
        if server.is_running():
            server.kill()


@pytest.mark.slow
def test_a_lingering_api_serves_the_next_cli_and_leaves_by_itself_when_idle(lingering):
    import json

    url, reused, server, record = lingering(6)
    assert not reused and server.is_running()  # it outlived the CLI that started it
    assert json.loads(record.read_text())["url"] == url and json.loads(record.read_text())["pid"] == server.pid
    again, reused, _, _ = lingering(6)
    assert (again, reused) == (url, True)  # the next CLI skips the start-up
    server.wait(timeout=60)  # no client for 6 s: it exits by itself
    assert not record.exists()


@pytest.mark.slow
def test_a_lingering_api_stopped_with_sigterm_forgets_its_record(lingering):
    _, _, server, record = lingering(300)
    assert record.exists()
    server.terminate()  # `kill <pid>`, or the machine shutting down
    server.wait(timeout=30)
    assert not record.exists()


def test_a_linger_that_is_not_a_number_names_the_variable_and_the_fix(monkeypatch):
    from tasks.runtime.local_api import linger_s

    monkeypatch.setenv("FUSIONAUDIT_LOCAL_API_LINGER_S", "soon")
    with pytest.raises(LocalAPIError, match=r"FUSIONAUDIT_LOCAL_API_LINGER_S='soon' is not a number of seconds: set it to 0"):
        linger_s()
    monkeypatch.setenv("FUSIONAUDIT_LOCAL_API_LINGER_S", "-5")
    assert linger_s() == 0.0  # a negative linger is no linger
    monkeypatch.delenv("FUSIONAUDIT_LOCAL_API_LINGER_S")
    assert linger_s() == 300.0
