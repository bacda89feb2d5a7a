"""Test isolation: every test session gets its own evidence store, caches and Prefect home.

The environment is set at import, before Prefect is first imported, because
Prefect reads its settings then.
"""
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

_SESSION = Path(tempfile.mkdtemp(prefix="fusionaudit-tests-"))
os.environ["FUSIONAUDIT_HOME"] = str(_SESSION / "home")
os.environ["FUSIONAUDIT_REPORTS"] = str(_SESSION / "reports")
os.environ["PREFECT_HOME"] = str(_SESSION / "prefect")
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(_SESSION / "home" / "prefect-results")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["FUSIONAUDIT_LOCAL_API_LINGER_S"] = "0"  # a CLI's local API stops with it: no test leaves a server behind
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a hub
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)

# Imported now, after the settings above: a CLI command run in-process then keeps this session's Prefect (the test
# harness) instead of starting its own local API, which only a fresh CLI process does (tasks/runtime/local_api.py).
import prefect  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _cli_log_level_does_not_leak():
    """A CLI command run in-process without --verbose quiets Prefect's console through the environment (a test's, or
    a module fixture's, which runs before this one); the subprocesses of later tests (workers, a CLI run with
    --verbose) must not inherit that, so it is cleared after every test."""
    yield
    os.environ.pop("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", None)


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect test server for the whole session (starting one costs ~12 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# ------------------------------------------------------------------ example plugins (examples/*)

def _install_command(source: Path, target: Path) -> list[str]:
    # --no-build-isolation: build with this environment's setuptools, so no index is needed.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    if uv := shutil.which("uv"):
        return [uv, "pip", "install", "--offline", "--no-deps", *isolation, "--python", sys.executable,
                "--target", str(target), str(source)]
    if importlib.util.find_spec("pip"):
        return [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", *isolation,
                "--target", str(target), str(source)]
    pytest.skip("neither uv (on PATH) nor pip (in this Python) is available to install the example plugin")


@pytest.fixture(scope="session")
def install_example(tmp_path_factory):
    """``install(package folder) -> site folder``: the package really built and installed, once per session, into a
    folder that is on sys.path only inside ``plugin_on_path``, so the rest of the session never sees it."""
    sites: dict[Path, Path] = {}

    def install(package: Path) -> Path:
        if package not in sites:
            work = tmp_path_factory.mktemp(package.name)
            source = work / "src"
            # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
            shutil.copytree(package, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            done = subprocess.run(_install_command(source, work / "site"), capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr
            sites[package] = work / "site"
        return sites[package]

    return install


@contextmanager
def _on_path(site: Path):
    """``site`` importable (its entry points visible) inside the block; its modules forgotten after it."""
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()  # importlib.metadata caches each path entry's listing
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        for name, module in list(sys.modules.items()):
            if Path(getattr(module, "__file__", None) or "/").is_relative_to(site):
                del sys.modules[name]
        importlib.invalidate_caches()


@pytest.fixture(scope="session")
def plugin_on_path():
    return _on_path
