"""Mission kinds: the YAML's top-level ``kind`` (default ``week1``) selects the mission loader and the flow.

A kind is registered once here, by import path, so ``fusionaudit cycle run``
imports only the flow it runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import yaml

from tasks.mission import MissionError

DEFAULT_KIND = "week1"


@dataclass(frozen=True)
class MissionKind:
    name: str
    loader: str   # "module:function": (mission_path) -> validated mission, raises MissionError; imports no flow
    flow: str     # "module:function": the Prefect flow that runs a cycle of this kind
    summary: str

    def load(self):
        return _resolve(self.loader)

    def flow_fn(self):
        return _resolve(self.flow)


KINDS: dict[str, MissionKind] = {
    "week1": MissionKind("week1", "tasks.mission:load_mission", "flows.week1:week1_cycle",
                         "diagnose models for modality collapse (missions/week1.yaml)"),
    "training": MissionKind("training", "tasks.training.mission:prepare_training_mission", "flows.training:training_cycle",
                            "train mitigations, re-diagnose, decide per variant (missions/week2-mitigation.yaml)"),
    "probing": MissionKind("probing", "tasks.probing.mission:load_probing_mission", "flows.probing:probing_cycle",
                           "probe where spatial information goes, select candidates (missions/p4-spatial-probing.yaml)"),
}


def _resolve(ref: str):
    module, _, name = ref.partition(":")
    return getattr(import_module(module), name)


def kind_of(mission_path: str | Path) -> MissionKind:
    """The kind a mission file declares. A file that cannot be read is left to its loader's messages (week1's)."""
    if not Path(mission_path).is_file():  # a folder or a pipe is never read here: the loader names it
        return KINDS[DEFAULT_KIND]
    try:
        data = yaml.safe_load(Path(mission_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError):  # ValueError: a date YAML cannot build
        return KINDS[DEFAULT_KIND]
    name = data.get("kind", DEFAULT_KIND) if isinstance(data, dict) else DEFAULT_KIND
    if name not in KINDS:
        raise MissionError(f"{mission_path}: field 'kind': unknown mission kind {name!r}: use one of {', '.join(sorted(KINDS))}")
    return KINDS[name]
