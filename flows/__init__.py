"""Prefect flows and the CLI.

Prefect reads its settings when it is first imported, so the defaults that
keep a cycle local and offline are set here, before that import: cached
results in the project folder, no analytics calls from an offline machine.
"""
import os as _os

_home = _os.path.abspath(_os.environ.get("FUSIONAUDIT_HOME", ".fusionaudit"))
_os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", _os.path.join(_home, "prefect-results"))
_os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
_os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # a loaded 2-core machine is slow to start it
_os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per table read would clutter the CLI
