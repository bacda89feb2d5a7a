"""The probing mission (``kind: probing``): where does spatial information go inside a VLM?

A planning team's brief as validated data: the models and, per model, the
extraction points named the way its adapter names them (vision encoder output,
after the projector/merger, LM layers at chosen depths); the probe targets;
the data; the thresholds of the decision matrix and the rule that selects the
candidates. A malformed file fails before anything runs with one message
naming the field and the fix (``MissionError``, exit 2 in the CLI).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tasks.mission import Action as _WeekAction
from tasks.mission import Criterion, MissionError, Priority, Role, _find_cycle, parse_yaml_model, read_mission_text  # noqa: F401 - shared rules
from tasks.mission import Strict as _Strict

# The stages of flows/probing.py; each action names the one it is executed by.
Stage = Literal["models", "extraction", "probes", "alignment", "decision"]
Metric = Literal["spatial_iou", "bbox_iou", "map50", "position_accuracy", "presence_accuracy",
                 "position_selectivity", "presence_selectivity", "bbox_selectivity"]
Target = Literal["box", "presence", "position"]

# What each adapter calls its extraction points, and the stage of the pipeline each one is:
# "vision" (the encoder's output), "projector" (after the projector / merger, in the LM's width),
# "lm" (a language-model layer, with a depth).
POINT_NAMES: dict[str, dict[str, str]] = {
    "zoo-spatial": {"vision": "vision", "projector": "projector", "lm": "lm"},
    "llava": {"vision": "vision", "projector": "projector", "lm": "lm"},
    "llava-next": {"vision": "vision", "projector": "projector", "lm": "lm"},
    "internvl": {"vision": "vision", "pixel_shuffle": "projector", "projector": "projector", "lm": "lm"},
    "qwen2-vl": {"vision": "vision", "merger": "projector", "lm": "lm"},
    "qwen2.5-vl": {"vision": "vision", "merger": "projector", "lm": "lm"},
    "cogvlm2": {"vision": "vision", "visual_expert": "lm", "lm": "lm"},
}


class Point(_Strict):
    """One extraction point: ``at`` is the adapter's name for the place, ``depth`` the LM layer as a fraction."""

    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    at: str = Field(min_length=1)
    depth: float | None = Field(default=None, gt=0.0, le=1.0)
    note: str = ""

    def layer(self, n_layers: int) -> int:
        """The 0-based LM layer at this depth of a model with ``n_layers`` (depth 1.0 is the last)."""
        return max(0, min(n_layers - 1, round(self.depth * n_layers) - 1))


class ProbingModel(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    adapter: str = Field(min_length=1)
    source: str = ""
    arch: str | None = None
    calibration: bool = False       # a zoo model with planted spatial behaviour: a control, never a candidate
    planted: Literal["keeps", "destroys"] | None = None  # what a calibration model must show
    seed: int = Field(default=0, ge=0)
    points: tuple[Point, ...] = Field(min_length=1)
    # Config overrides used only with --allow-random-init (the real class, random weights, smaller); lists allowed
    random_init_config: dict[str, Any] = {}

    @model_validator(mode="after")
    def _points_fit_adapter(self) -> ProbingModel:
        names = POINT_NAMES.get(self.adapter)
        if names is None:
            raise ValueError(f"model {self.name}: adapter {self.adapter!r} has no probing extraction points: "
                             f"use one of {sorted(POINT_NAMES)}")
        ids = [p.id for p in self.points]
        if len(set(ids)) != len(ids):
            raise ValueError(f"model {self.name}: extraction point ids repeat ({ids}): give each point its own id")
        for p in self.points:
            if p.at not in names:
                raise ValueError(f"model {self.name}: point {p.id} at {p.at!r} is not an extraction point of adapter "
                                 f"{self.adapter!r}: use one of {sorted(names)}")
            if (names[p.at] == "lm") != (p.depth is not None):
                raise ValueError(f"model {self.name}: point {p.id}: give 'depth' (0 < depth <= 1) for LM layers "
                                 "and only for them")
        if not any(names[p.at] == "vision" for p in self.points):
            raise ValueError(f"model {self.name}: add the vision encoder output as a point (at: vision): "
                             "alignment (CKA) is measured against it")
        if self.calibration != (self.planted is not None):
            raise ValueError(f"model {self.name}: a calibration model names what it plants (planted: keeps | destroys) "
                             "and only calibration models do")
        return self

    def stage(self, point: Point) -> str:
        return POINT_NAMES[self.adapter][point.at]


class ProbingData(_Strict):
    """synthetic: the screening set (position drawn independently of shape, colour and size);
    coco: instances JSON + images (real boxes). Relative paths are relative to the mission file."""

    kind: Literal["synthetic", "coco"] = "synthetic"
    samples: int = Field(ge=20, le=100_000)
    seed: int = 0
    image_size: int = Field(default=32, ge=16, le=1024)
    empty_fraction: float = Field(default=0.2, ge=0.0, lt=0.9)   # images without an object (presence target)
    test_fraction: float = Field(default=0.5, gt=0.1, lt=0.9)    # images held out for scoring the probes
    instances: str | None = None    # coco: instances_<split>.json
    images: str | None = None       # coco: the image folder

    @model_validator(mode="after")
    def _paths_for_kind(self) -> ProbingData:
        if self.kind == "coco" and not (self.instances and self.images):
            raise ValueError("data kind 'coco' needs instances and images: add both paths under 'data'")
        return self

    def resolved(self, base: Path) -> ProbingData:
        return self.model_copy(update={f: str((base / getattr(self, f)).resolve())
                                       for f in ("instances", "images") if getattr(self, f)})


class Probe(_Strict):
    pool: Literal["mean", "tokens"] = "tokens"   # tokens: order kept, resampled to ``tokens`` positions
    tokens: int = Field(default=16, ge=1, le=1024)
    grid: int = Field(default=8, ge=2, le=64)    # occupancy grid of Spatial IoU
    bootstrap: int = Field(default=2000, ge=200)
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    control: Literal["shuffled_targets", "random_features"] = "shuffled_targets"
    batch_size: int = Field(default=16, ge=1)


class Threshold(_Strict):
    metric: Metric
    op: Literal[">", ">="] = ">"
    value: float

    def label(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


class Decision(_Strict):
    stages: tuple[Literal["vision", "projector", "lm"], ...] = ("lm",)  # the points whose best value is judged
    pass_on: Literal["estimate", "ci_low"] = "ci_low"


class Selection(_Strict):
    top: int = Field(default=2, ge=1)
    rank_by: Metric = "spatial_iou"
    require: Literal["all", "any"] = "all"


class Action(_WeekAction):
    stage: Stage  # type: ignore[assignment] - the probing flow's stages


class ProbingMission(_Strict):
    kind: Literal["probing"]
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    title: str
    hypothesis: str
    models: tuple[ProbingModel, ...] = Field(min_length=1)
    data: ProbingData
    targets: tuple[Target, ...] = ("box", "presence", "position")
    probe: Probe = Probe()
    thresholds: tuple[Threshold, ...] = Field(min_length=1)
    decision: Decision = Decision()
    selection: Selection = Selection()
    actions: tuple[Action, ...] = Field(min_length=1)

    @field_validator("targets")
    @classmethod
    def _box_first(cls, targets: tuple[str, ...]) -> tuple[str, ...]:
        if "box" not in targets:
            raise ValueError("targets must include 'box': Spatial IoU, Bbox IoU and mAP@0.5 are read from the box probe")
        return tuple(dict.fromkeys(targets))

    @model_validator(mode="after")
    def _references_resolve(self) -> ProbingMission:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        needs = {"presence_accuracy": "presence", "presence_selectivity": "presence", "map50": "presence",
                 "position_accuracy": "position", "position_selectivity": "position"}
        for t in (*self.thresholds, self.selection):
            metric = t.metric if isinstance(t, Threshold) else t.rank_by
            if metric in needs and needs[metric] not in self.targets:
                raise ValueError(f"{metric} needs the {needs[metric]!r} target: add it under 'targets'")
        ids = {a.id for a in self.actions}
        if len(ids) != len(self.actions):
            raise ValueError("action ids repeat: give each action its own id")
        for a in self.actions:
            unknown = [d for d in a.depends_on if d not in ids]
            if unknown:
                raise ValueError(f"action {a.id} depends on unknown action {unknown[0]!r}: use one of {sorted(ids)}")
        cycle = _find_cycle({a.id: a.depends_on for a in self.actions})
        if cycle:
            raise ValueError(f"actions form a dependency cycle {' -> '.join(cycle)}: remove one of these depends_on entries")
        stages = [a.stage for a in self.actions]
        if len(set(stages)) != len(stages):
            raise ValueError("several actions use the same stage: the probing flow runs each stage once")
        return self

    # The shape the shared machinery (planner, quality officer) expects of a mission.
    def for_stage(self, stage: str) -> Action | None:
        return next((a for a in self.actions if a.stage == stage), None)

    def action(self, action_id: str) -> Action:
        return next(a for a in self.actions if a.id == action_id)

    def model(self, name: str) -> ProbingModel:
        return next(m for m in self.models if m.name == name)

    @property
    def alternatives(self) -> tuple:
        return ()


def parse_probing_mission(text: str, source: str = "<mission>") -> ProbingMission:
    return parse_yaml_model(text, source, ProbingMission, "missions/p4-spatial-probing.yaml")


def load_probing_mission(path: str | Path) -> ProbingMission:
    path = Path(path)
    mission = parse_probing_mission(read_mission_text(path), str(path))
    return mission.model_copy(update={"data": mission.data.resolved(path.resolve().parent)})
