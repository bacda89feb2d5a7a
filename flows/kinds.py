"""Mission kinds: the YAML's top-level ``kind`` (default ``week1``) picks the mission loader and the flow.

``fusionaudit cycle run --mission X`` reads the kind, validates the mission with
that kind's loader (one message, exit 2, on bad input) and runs that kind's flow.
"""
from __future__ import annotations

from importlib import import_module
from pathlib import Path

import yaml

from tasks.mission import MissionError

# kind -> (mission loader, flow) as import paths: reading a mission never imports the flows (Prefect, torch)
KINDS = {
    "week1": ("tasks.mission:load_mission", "flows.week1:week1_cycle"),
    "probing": ("tasks.probing.mission:load_probing_mission", "flows.probing:probing_cycle"),
}
DEFAULT_KIND = "week1"


def _resolve(target: str):
    module, name = target.split(":")
    return getattr(import_module(module), name)


def loader(kind: str):
    """The kind's mission loader (validates the YAML; raises MissionError with one message)."""
    return _resolve(KINDS[kind][0])


def cycle_flow(kind: str):
    """The kind's cycle flow."""
    return _resolve(KINDS[kind][1])


def kind_of(path: str | Path) -> str:
    """The mission's kind, read before the mission is validated (a file that cannot be read is week1's to explain)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return DEFAULT_KIND
    kind = data.get("kind", DEFAULT_KIND) if isinstance(data, dict) else DEFAULT_KIND
    if kind not in KINDS:
        raise MissionError(f"{path}: field 'kind': unknown mission kind {kind!r}: use one of {sorted(KINDS)}")
    return kind
