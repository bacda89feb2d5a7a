"""Where fusionaudit keeps its state: one project-local folder by default."""
from __future__ import annotations

import os
from pathlib import Path


DEFAULT_MISSION = Path(__file__).resolve().parents[2] / "missions" / "week1.yaml"  # the embedded Week-1 mission


def home() -> Path:
    """``$FUSIONAUDIT_HOME`` or ``./.fusionaudit``: evidence store, caches, Prefect results."""
    return Path(os.environ.get("FUSIONAUDIT_HOME", ".fusionaudit")).resolve()


def cache_dir(*parts: str) -> Path:
    path = home().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def reports_root() -> Path:
    return Path(os.environ.get("FUSIONAUDIT_REPORTS", "reports")).resolve()


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or SQLite in the project-local folder (MLflow's file store is retired)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    home().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home() / 'mlflow.db'}"
