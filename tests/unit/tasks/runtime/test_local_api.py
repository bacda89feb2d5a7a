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
