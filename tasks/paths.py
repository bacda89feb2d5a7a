"""Where fusionaudit keeps its state: one project-local folder by default."""
from __future__ import annotations

import os
from pathlib import Path


DEFAULT_MISSION = Path(__file__).resolve().parent.parent / "missions" / "week1.yaml"  # the embedded Week-1 mission


def home() -> Path:
    """``$FUSIONAUDIT_HOME`` or ``./.fusionaudit``: evidence store, caches, Prefect results."""
    return Path(os.environ.get("FUSIONAUDIT_HOME", ".fusionaudit")).resolve()


def cache_dir(*parts: str) -> Path:
    path = home().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def reports_root() -> Path:
    return Path(os.environ.get("FUSIONAUDIT_REPORTS", "reports")).resolve()
