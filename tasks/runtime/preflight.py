"""Checks run before a cycle starts: evidence store, Prefect API, disk space. Each fails in seconds with one message.

Without them a dead tracking server costs MLflow's own minutes of HTTP
retries before the first error, and a full disk shows up as a traceback
halfway through the reports. Every ``PreflightError`` names the input, the
problem and the fix.
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tasks.runtime.paths import home, reports_root, tracking_uri

DEFAULT_MIN_FREE_MB = 200
TIMEOUT_S = 2.0  # per network check: connect + one GET, never retried


class PreflightError(RuntimeError):
    """A precondition of the cycle does not hold; the message says which input, what is wrong, and the fix."""


def _http_health(what: str, base: str, fix: str, timeout: float = TIMEOUT_S) -> str:
    """Socket connect, then GET <base>/health, within ``timeout`` seconds in all."""
    parts = urlsplit(base)
    if not parts.hostname:
        raise PreflightError(f"{what} {base!r} has no host: {fix}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + timeout
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise PreflightError(f"{what} {base} is not reachable ({_why(exc)}): {fix}") from None
    url = base.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=max(0.2, deadline - time.monotonic())) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, urllib.error.URLError) as exc:
        raise PreflightError(f"{what} {base} accepts connections but GET {url} failed ({_why(exc)}): {fix}") from None
    # 401/403: a server behind authentication is up; the client brings the credentials.
    if not (200 <= status < 300 or status in (401, 403)):
        raise PreflightError(f"{what} {base} answered HTTP {status} on GET {url}: check that the URL points at the server; {fix}")
    return f"{what} {base} answered GET /health"


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason)


def check_mlflow(uri: str | None = None, timeout: float = TIMEOUT_S) -> str:
    """An http(s) tracking server answers /health; a SQLite store's folder is writable. Returns what was checked."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:  # the local SQLite store in the fusionaudit home (no MLflow import: this check must be fast)
        uri = tracking_uri()
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        return _http_health("MLFLOW_TRACKING_URI", uri, "start the MLflow server (`mlflow server --host 127.0.0.1 --port <port>`) "
                            "or unset MLFLOW_TRACKING_URI to use the local SQLite store", timeout)
    if scheme == "sqlite":
        db = uri.removeprefix("sqlite:///")
        if db in ("", ":memory:") or db == uri:
            return f"MLflow store {uri}: in memory, nothing to check"
        folder = Path(db).resolve().parent
        _writable(folder, f"MLflow SQLite store {uri}", "MLFLOW_TRACKING_URI")
        return f"MLflow SQLite store folder {folder} is writable"
    return f"MLflow store {uri}: scheme {scheme!r} not pre-checked"


def check_prefect_api(url: str | None = None, timeout: float = TIMEOUT_S) -> str | None:
    """When ``PREFECT_API_URL`` is set, its server answers /health; None when Prefect runs its local API."""
    url = url if url is not None else os.environ.get("PREFECT_API_URL")
    if not url:
        return None
    return _http_health("PREFECT_API_URL", url, "start it (`prefect server start`) or unset PREFECT_API_URL "
                        "to use Prefect's local API", timeout)


def min_free_mb() -> int:
    raw = os.environ.get("FUSIONAUDIT_MIN_FREE_MB", str(DEFAULT_MIN_FREE_MB))
    try:
        value = int(raw)
    except ValueError:
        raise PreflightError(f"FUSIONAUDIT_MIN_FREE_MB={raw!r} is not a whole number of megabytes: "
                             f"set it to e.g. {DEFAULT_MIN_FREE_MB} or unset it") from None
    if value < 0:
        raise PreflightError(f"FUSIONAUDIT_MIN_FREE_MB={raw} is negative: set it to 0 or more")
    return value


def check_disk(folder: Path, setting: str, min_mb: int | None = None) -> str:
    """``folder`` (which the environment variable ``setting`` moves) exists, is writable, has ``min_mb`` MB free."""
    need = min_free_mb() if min_mb is None else min_mb
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PreflightError(f"{setting}: {describe_os_error(exc, folder, setting)}") from None
    free_mb = shutil.disk_usage(folder).free // 2**20
    if free_mb < need:  # checked before writing: on a full disk the probe itself would fail less clearly
        raise PreflightError(f"{setting} {folder}: only {free_mb} MB free, at least {need} MB needed: free space there, "
                             f"set {setting} to a folder on a disk with room, or lower FUSIONAUDIT_MIN_FREE_MB")
    _writable(folder, setting, setting)
    return f"{setting} {folder}: writable, {free_mb} MB free"


def _writable(folder: Path, label: str, setting: str | None) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"fusionaudit preflight")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise PreflightError(f"{label}: {describe_os_error(exc, folder, setting)}") from None


def run_preflight() -> list[str]:
    """All checks, in the order a cycle needs them; raises ``PreflightError`` at the first that fails."""
    checked = [check_mlflow()]
    prefect = check_prefect_api()
    if prefect:
        checked.append(prefect)
    checked.append(check_disk(home(), "FUSIONAUDIT_HOME"))
    checked.append(check_disk(reports_root(), "FUSIONAUDIT_REPORTS"))
    return checked


def describe_os_error(exc: OSError, path: str | Path, setting: str | None = None) -> str:
    """One line for a failed write: what happened to which path, and what to do (free space, permissions, read-only).

    ``setting`` is the environment variable that moves ``path`` elsewhere; by
    default it is inferred (FUSIONAUDIT_REPORTS or FUSIONAUDIT_HOME).
    """
    path = Path(path)
    where = setting or _setting_for(path)
    redirect = f"or set {where} to another folder" if where else "or write somewhere else"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = _free_mb(path)
        room = f" ({free} MB free there)" if free is not None else ""
        return f"{path}: no space left on the device{room}: free space on that disk {redirect}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"{path}: permission denied for user {_user()}: make the folder writable "
                f"(`chmod u+w` / `chown`) {redirect}")
    if exc.errno == errno.EROFS:
        return f"{path}: the file system is read-only: remount it read-write {redirect}"
    return f"{path}: {exc.strerror or exc} (errno {exc.errno})"


def _setting_for(path: Path) -> str | None:
    resolved = path.resolve()
    for setting, root in (("FUSIONAUDIT_REPORTS", reports_root()), ("FUSIONAUDIT_HOME", home())):
        if resolved == root or root in resolved.parents:
            return setting
    return None


def _free_mb(path: Path) -> int | None:
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free // 2**20
            except OSError:
                return None
    return None


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def describe_template_error(exc: BaseException) -> str:
    """``<template file>:<line>: <problem>`` for a Jinja error, so a broken report template is one line, not a traceback.

    A syntax error carries its file and line; an error while rendering (an
    undefined name under ``StrictUndefined``) has them only in the traceback
    frames Jinja rewrites to point at the template.
    """
    import traceback

    from jinja2 import TemplateSyntaxError

    if isinstance(exc, TemplateSyntaxError):
        return f"{exc.filename or exc.name or '<template>'}:{exc.lineno}: {exc.message}: fix the template's syntax"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.name in ("top-level template code", "template")
              or f.name.startswith("block ") or f.name.startswith("macro ")]
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "<template>"
    return f"{where}: {type(exc).__name__}: {exc}: fix the template or the value it reads"
