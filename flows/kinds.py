"""Mission kinds: the YAML's top-level ``kind`` (default ``week1``) picks the mission loader and the flow.

``fusionaudit cycle run --mission X`` reads the kind, validates the mission with
that kind's loader (one message, exit 2, on bad input) and runs that kind's flow.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from flows.probing import probing_cycle
from flows.week1 import week1_cycle
from tasks.mission import MissionError, load_mission
from tasks.probing.mission import load_probing_mission

KINDS = {
    "week1": (load_mission, week1_cycle),
    "probing": (load_probing_mission, probing_cycle),
}
DEFAULT_KIND = "week1"


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
