"""Preflight checks against real closed ports and a real 1 MB tmpfs (real ENOSPC, real EROFS)."""
from __future__ import annotations

import errno
import http.server
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tasks.reporting import views as reporting
from tasks.runtime import preflight
from tasks.runtime.preflight import PreflightError, check_disk, check_mlflow, check_prefect_api, describe_os_error, run_preflight


def _closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_tracking_server_on_a_closed_port_fails_fast_with_the_fix():
    uri = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(PreflightError) as err:
        check_mlflow(uri)
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert msg.startswith(f"MLFLOW_TRACKING_URI {uri} is not reachable (")
    assert "mlflow server" in msg and "unset MLFLOW_TRACKING_URI" in msg


def test_prefect_api_on_a_closed_port_fails_fast_with_the_fix(monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    t0 = time.monotonic()
    with pytest.raises(PreflightError) as err:
        check_prefect_api()
    assert time.monotonic() - t0 < 10
    assert f"PREFECT_API_URL {url} is not reachable" in str(err.value) and "prefect server start" in str(err.value)


def test_prefect_api_unset_is_not_checked(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert check_prefect_api() is None


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(self.status if self.path.endswith("/health") else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    """A real HTTP server on loopback answering /health with a chosen status."""
    servers = []

    def start(status: int) -> str:
        handler = type("H", (_Health,), {"status": status})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_a_server_that_answers_health_passes(health_server):
    uri = health_server(200)
    assert check_mlflow(uri) == f"MLFLOW_TRACKING_URI {uri} answered GET /health"
    assert check_prefect_api(uri + "/api") == f"PREFECT_API_URL {uri}/api answered GET /health"


def test_a_server_answering_an_error_status_is_named(health_server):
    uri = health_server(503)
    with pytest.raises(PreflightError, match=r"answered HTTP 503 on GET .*/health"):
        check_mlflow(uri)


def test_sqlite_store_folder_is_checked_writable(tmp_path):
    assert check_mlflow(f"sqlite:///{tmp_path / 'sub' / 'mlflow.db'}") == f"MLflow SQLite store folder {tmp_path / 'sub'} is writable"


def test_min_free_mb_setting_is_validated(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONAUDIT_MIN_FREE_MB", "lots")
    with pytest.raises(PreflightError, match="FUSIONAUDIT_MIN_FREE_MB='lots' is not a whole number"):
        check_disk(tmp_path, "FUSIONAUDIT_HOME")


def test_run_preflight_lists_what_it_checked(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("FUSIONAUDIT_MIN_FREE_MB", "1")
    checked = run_preflight()
    assert len(checked) == 3
    assert checked[0].startswith("MLflow SQLite store folder")
    assert checked[1].startswith("FUSIONAUDIT_HOME ") and checked[2].startswith("FUSIONAUDIT_REPORTS ")


# ---------------------------------------------------------------- a real small file system


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MB tmpfs, unmounted after the test."""
    mnt = tmp_path / "tiny"
    _mount_tmpfs(mnt, "size=1m")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


@pytest.fixture
def read_only_fs(tmp_path):
    mnt = tmp_path / "ro"
    _mount_tmpfs(mnt, "size=1m,ro")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_free_space_check_fails_on_a_small_file_system(tiny_fs, monkeypatch):
    monkeypatch.delenv("FUSIONAUDIT_MIN_FREE_MB", raising=False)  # the default 200 MB
    with pytest.raises(PreflightError) as err:
        check_disk(tiny_fs, "FUSIONAUDIT_REPORTS")
    assert str(err.value) == (f"FUSIONAUDIT_REPORTS {tiny_fs}: only 1 MB free, at least 200 MB needed: free space there, "
                              "set FUSIONAUDIT_REPORTS to a folder on a disk with room, or lower FUSIONAUDIT_MIN_FREE_MB")
    assert check_disk(tiny_fs, "FUSIONAUDIT_REPORTS", min_mb=0).startswith(f"FUSIONAUDIT_REPORTS {tiny_fs}: writable")


def test_writing_a_report_to_a_full_disk_is_a_real_enospc_with_a_clear_message(tiny_fs, monkeypatch):
    monkeypatch.setenv("FUSIONAUDIT_REPORTS", str(tiny_fs))
    target = tiny_fs / "week1" / "cycle" / "handoff" / "execution_progress_update.md"
    with pytest.raises(OSError) as err:
        reporting._write(target, "x" * (2 * 2**20))  # 2 MB into a 1 MB file system
    assert err.value.errno == errno.ENOSPC
    msg = describe_os_error(err.value, target)
    assert msg == (f"{target}: no space left on the device (0 MB free there): free space on that disk "
                   "or set FUSIONAUDIT_REPORTS to another folder")


def test_a_read_only_file_system_is_named_as_such(read_only_fs):
    with pytest.raises(PreflightError) as err:
        check_disk(read_only_fs, "FUSIONAUDIT_HOME", min_mb=0)
    assert str(err.value) == (f"FUSIONAUDIT_HOME: {read_only_fs}: the file system is read-only: remount it read-write "
                              "or set FUSIONAUDIT_HOME to another folder")


def test_permission_denied_names_the_user_and_the_fix(tmp_path):
    # Root bypasses file permissions here, so EACCES cannot be provoked: the exception is the one open() raises.
    exc = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "r.md"))
    msg = describe_os_error(exc, tmp_path / "r.md", "FUSIONAUDIT_REPORTS")
    assert msg == (f"{tmp_path / 'r.md'}: permission denied for user {preflight._user()}: make the folder writable "
                   "(`chmod u+w` / `chown`) or set FUSIONAUDIT_REPORTS to another folder")
