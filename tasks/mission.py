"""The mission brief: a planning team's handoff as validated data.

A malformed mission fails before anything runs, with one message that names
the field and the fix (``MissionError``).
"""
from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Priority = Literal["HIGH", "MEDIUM", "LOW"]
Role = Literal["planning_team", "ops_commander", "quality_officer", "infra_monitor", "research_advisor", "strategic_lead"]
# The DAG stage an action is executed by (flows/week1.py wires the stages).
Stage = Literal["adapters", "environment", "statistics", "diagnostics", "literature", "alternative_models", "paper"]
Op = Literal[">=", ">", "<=", "<", "==", "!="]
PRIORITY_ORDER = {"HIGH": 0, "MEDIUM": 1, "LOW": 2}


class MissionError(ValueError):
    """A mission file that cannot be used; the message names the input and the fix."""


# Bounds on free text: long enough for any real brief, short enough for a table cell and an MLflow tag.
NAME_MAX, TITLE_MAX, TEXT_MAX = 64, 200, 2000
SAMPLES_MAX = 100_000
ZOO_VARIANTS = ("text_dominant", "balanced", "vision_dominant")  # tasks.adapters.zoo.calibration.VARIANTS (no torch import here)


class Strict(BaseModel):
    """The base of every mission schema and training config: an unknown field is an error, a value never changes."""
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Strict(Strict):
    # .nan / .inf are never a threshold, a baseline or a gate: every float field of a Week-1 mission must be finite
    model_config = ConfigDict(allow_inf_nan=False)


class Criterion(_Strict):
    """A machine-checkable acceptance criterion: ``<metric of the action's run> <op> <value>``."""

    description: str = Field(min_length=1, max_length=TITLE_MAX)
    metric: str = Field(min_length=1, max_length=TITLE_MAX, pattern=r"^[A-Za-z0-9_./-]+$")
    op: Op
    value: float

    def holds(self, observed: float | None) -> bool:
        if observed is None:
            return False
        return {
            ">=": observed >= self.value, ">": observed > self.value,
            "<=": observed <= self.value, "<": observed < self.value,
            "==": observed == self.value, "!=": observed != self.value,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


class Action(_Strict):
    id: str = Field(pattern=r"^[A-Z][A-Za-z0-9_-]*$", max_length=NAME_MAX)
    title: str = Field(min_length=1, max_length=TITLE_MAX)
    priority: Priority
    owner: Role
    stage: Stage
    deadline_hours: int = Field(gt=0, le=24 * 366, description="deadline relative to the cycle start (at most a year)")
    depends_on: tuple[str, ...] = ()
    acceptance: tuple[Criterion, ...] = Field(min_length=1)


class ModelEntry(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=NAME_MAX)
    adapter: str = Field(min_length=1, max_length=NAME_MAX)
    source: str = Field(min_length=1, max_length=1000)
    arch: str | None = None
    calibration: bool = False       # zoo model with planted behaviour, not an external architecture
    alternatives: tuple[str, ...] = ()
    # Config overrides used only with --allow-random-init (the real class, random weights, smaller)
    random_init_config: dict[str, int | float | str | bool | None] = {}
    # Code shipped with the weights (transformers' trust_remote_code, e.g. CogVLM2) runs only when this is true
    # and the cycle is started with --trust-remote-code as well (docs/security.md).
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _zoo_source_is_a_variant(self) -> ModelEntry:
        if self.adapter == "zoo" and self.source not in ZOO_VARIANTS:
            raise ValueError(f"model {self.name}: zoo source {self.source!r} is not a calibration variant: "
                             f"use one of {', '.join(ZOO_VARIANTS)}")
        return self


class Dataset(_Strict):
    """synthetic (built in), coco (captions JSON + image folder [+ instances JSON for stratified sampling])
    or folder (images + a CSV/JSONL of image,caption). Relative paths are relative to the mission file."""

    kind: Literal["synthetic", "coco", "folder"] = "synthetic"
    samples: int = Field(ge=8, le=SAMPLES_MAX)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    annotations: str | None = None   # coco: captions_<split>.json
    images: str | None = None        # coco: the image folder
    instances: str | None = None     # coco: instances_<split>.json -> stratified across categories
    root: str | None = None          # folder: the folder image paths are relative to
    captions: str | None = None      # folder: CSV (image,caption) or JSONL
    max_words: int = Field(default=64, ge=1)

    @model_validator(mode="after")
    def _paths_for_kind(self) -> Dataset:
        needed = {"synthetic": (), "coco": ("annotations", "images"), "folder": ("root", "captions")}[self.kind]
        missing = [f for f in needed if getattr(self, f) is None]
        if missing:
            raise ValueError(f"dataset kind {self.kind!r} needs {', '.join(missing)}: add the path(s) under 'dataset'")
        return self

    def resolved(self, base: Path) -> Dataset:
        """Paths made absolute against ``base`` (the mission's folder), so a worker elsewhere reads the same files."""
        fields = ("annotations", "images", "instances", "root", "captions")
        return self.model_copy(update={f: str((base / getattr(self, f)).resolve()) for f in fields if getattr(self, f)})


class Runtime(_Strict):
    """Where the models run: ``cycle run --device/--dtype/--batch-size`` override these.

    device "auto": a GPU when there is one (transformers models load with device_map="auto", so one
    larger than a GPU spreads over all of them), else the CPU; or "cpu", "cuda", "cuda:N", "mps".
    dtype "auto": float32 on the CPU, the checkpoint's precision elsewhere. batch_size: samples per
    diagnostics batch (halved automatically on out-of-memory).
    """

    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?|mps)$")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: int = Field(default=32, ge=1, le=4096)


# How many models a gate asks for: at least one, at most far more than any cycle runs.
ModelCount = Annotated[int, Field(ge=1, le=1000)]


class Gates(_Strict):
    metric: str = Field(default="modality_shapley_v", max_length=NAME_MAX)
    min_models_tested: ModelCount
    min_models_collapsed: ModelCount
    imbalance_threshold: float = Field(gt=0.5, lt=1.0)
    alpha: float = Field(gt=0.0, lt=0.5)
    baseline: float = Field(default=0.5, gt=0.0, lt=1.0)
    # TOST margin: "balanced" is claimed only when the share is shown to lie within baseline ± margin
    equivalence_margin: float = Field(default=0.05, gt=0.0, lt=0.5)


class Mission(_Strict):
    kind: Literal["week1"] = "week1"   # flows/kinds.py: other kinds have their own schema and flow
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=NAME_MAX)
    title: str = Field(min_length=1, max_length=TITLE_MAX)
    hypothesis: str = Field(max_length=TEXT_MAX)
    start_date: date | None = None
    models: tuple[ModelEntry, ...] = Field(min_length=1)
    alternatives: tuple[ModelEntry, ...] = ()
    dataset: Dataset
    gates: Gates
    actions: tuple[Action, ...] = Field(min_length=1)
    runtime: Runtime = Runtime()

    @field_validator("actions")
    @classmethod
    def _unique_ids(cls, actions: tuple[Action, ...]) -> tuple[Action, ...]:
        seen: set[str] = set()
        for a in actions:
            if a.id in seen:
                raise ValueError(f"duplicate action id {a.id!r}: give each action its own id")
            seen.add(a.id)
        return actions

    @model_validator(mode="after")
    def _references_resolve(self) -> Mission:
        ids = {a.id for a in self.actions}
        for a in self.actions:
            for dep in a.depends_on:
                if dep not in ids:
                    raise ValueError(f"action {a.id} depends on unknown action {dep!r}: use one of {sorted(ids)}")
        cycle = _find_cycle({a.id: a.depends_on for a in self.actions})
        if cycle:
            raise ValueError(f"actions form a dependency cycle {' -> '.join(cycle)}: remove one of these depends_on entries")
        stages = [a.stage for a in self.actions]
        for stage in set(stages):
            if stages.count(stage) > 1:
                raise ValueError(f"several actions use stage {stage!r}: the Week-1 DAG runs each stage once, give each its own stage")
        names = {m.name for m in self.models + self.alternatives}
        if len(names) != len(self.models) + len(self.alternatives):
            raise ValueError("model names must be unique across models and alternatives")
        for m in self.models:
            for alt in m.alternatives:
                if alt not in names:
                    raise ValueError(f"model {m.name} names unknown alternative {alt!r}: add it under 'alternatives'")
        return self

    def action(self, action_id: str) -> Action:
        return next(a for a in self.actions if a.id == action_id)

    def for_stage(self, stage: str) -> Action | None:
        return next((a for a in self.actions if a.stage == stage), None)

    def model(self, name: str) -> ModelEntry:
        return next(m for m in self.models + self.alternatives if m.name == name)


def _find_cycle(graph: dict[str, tuple[str, ...]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves dates as text, so a bad date (2025-13-45) is a field error, not a YAML crash."""


_Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def parse_yaml_model(text: str, source: str, model: type[BaseModel], example: str = "missions/week1.yaml"):
    """Mission YAML text validated by ``model`` (any mission kind's schema); MissionError names the field and the fix."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MissionError(f"{source}: not valid YAML{where}: fix the syntax ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise MissionError(f"{source}: a mission is a YAML mapping of fields (see {example})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise MissionError(f"{source}: {_explain(exc).replace('missions/week1.yaml', example)}") from None


def read_mission_text(path: str | Path) -> str:
    """A mission file's text; a folder, a special file, a huge, missing, unreadable or non-UTF-8 file is one MissionError."""
    path = Path(path)
    if path.is_dir():
        raise MissionError(f"{path}: is a folder, not a mission file: pass the YAML file itself with --mission (see missions/)")
    if path.exists() and not path.is_file():
        raise MissionError(f"{path}: not a regular file (a pipe or a device): pass a mission YAML file with --mission")
    try:
        if path.stat().st_size > 1_000_000:
            raise MissionError(f"{path}: larger than 1 MB: a mission brief is a short YAML file")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissionError(f"{path}: mission file not found: pass an existing file with --mission (see missions/)") from None
    except UnicodeDecodeError:
        raise MissionError(f"{path}: not UTF-8 text: save the mission as UTF-8") from None
    except OSError as exc:
        raise MissionError(f"{path}: cannot be read ({exc.strerror or exc}): pass a readable mission file with --mission") from None


def parse_mission(text: str, source: str = "<mission>") -> Mission:
    """Validate Week-1 mission YAML text; raise MissionError naming the field and the fix."""
    return parse_yaml_model(text, source, Mission)


def load_mission(path: str | Path) -> Mission:
    mission = parse_mission(read_mission_text(path), str(path))
    return mission.model_copy(update={"dataset": mission.dataset.resolved(Path(path).resolve().parent)})


def _explain(exc: ValidationError) -> str:
    """The first error as one sentence: field path, problem, fix."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        fix = "remove it or check its spelling against missions/week1.yaml"
        msg = "unknown key"
    elif kind == "missing":
        fix = "add it (see missions/week1.yaml for an example)"
        msg = "required field is missing"
    elif kind == "literal_error":
        fix = "use one of the values listed"
    elif kind == "value_error":
        msg, fix = re.sub(r"^Value error, ", "", msg), ""
    elif kind == "finite_number":
        fix = f"got {err.get('input')!r}: write a finite number (.nan and .inf are not allowed)"
    else:
        shown = repr(err.get("input"))
        fix = f"got {shown[:60] + '...' if len(shown) > 60 else shown}"
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return f"field '{loc}': {msg}" + (f": {fix}" if fix else "") + more
