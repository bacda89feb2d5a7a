"""Test isolation: every test session gets its own evidence store, caches and Prefect home.

The environment is set at import, before Prefect is first imported, because
Prefect reads its settings then.
"""
import os
import tempfile
from pathlib import Path

import pytest

_SESSION = Path(tempfile.mkdtemp(prefix="fusionaudit-tests-"))
os.environ["FUSIONAUDIT_HOME"] = str(_SESSION / "home")
os.environ["FUSIONAUDIT_REPORTS"] = str(_SESSION / "reports")
os.environ["PREFECT_HOME"] = str(_SESSION / "prefect")
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(_SESSION / "home" / "prefect-results")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a hub
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect test server for the whole session (starting one costs ~12 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
