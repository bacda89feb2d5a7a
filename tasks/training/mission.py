"""The training mission: a baseline, its recipe, variants as config deltas, gates, checklist and rollback rule.

Its YAML carries ``kind: training`` (``flows/kinds.py`` sends it here). A
malformed mission fails before anything trains, with one message naming the
field and the fix (``MissionError``, exit 2 at the CLI).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from tasks.mission import MissionError, Op, _explain, parse_yaml_model, read_mission_text
from tasks.mission import Strict as _Strict
from tasks.training.config import TrainConfig, apply_deltas, parameters

Scalar = int | float | str | bool | None
# Per-sample metrics of tasks/diagnostics/run.py that the re-diagnosis of a trained model can compute.
METRICS = ("modality_shapley_v", "ablation_visual_share", "mm_shap_v")
DECISIONS = ("ADOPT", "PARTIAL", "ROLLBACK")


class Baseline(_Strict):
    name: str = Field(default="baseline", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = Field(min_length=1)
    config: TrainConfig


class Delta(_Strict):
    """One change of a variant: ``parameter`` (``section.field``) from its baseline value to a new one, and why."""

    parameter: str = Field(min_length=3)
    baseline: Scalar
    new: Scalar
    reason: str = Field(min_length=1)


class Variant(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    title: str = Field(min_length=1)
    deltas: tuple[Delta, ...] = Field(min_length=1)


class Data(_Strict):
    """The built-in task (tasks/training/data.py): training set, held-out set every model is diagnosed on."""

    kind: Literal["synthetic"] = "synthetic"
    train_samples: int = Field(default=1024, ge=64, le=100_000)
    eval_samples: int = Field(default=64, ge=8, le=10_000)
    seed: int = Field(default=1000, ge=0)
    text_reliability: float = Field(default=0.9, gt=0.5, le=1.0)


class Budget(_Strict):
    max_training_runs: int = Field(ge=1)
    max_minutes: float = Field(gt=0)


class Gates(_Strict):
    """ADOPT: the gate metric rises (paired, Holm-corrected across variants) to at least ``min_visual_share``,
    and accuracy is shown not to fall more than ``max_accuracy_drop`` (the lower CI bound of the paired difference)."""

    metric: str = "modality_shapley_v"
    min_visual_share: float = Field(gt=0.0, lt=1.0)
    max_accuracy_drop: float = Field(ge=0.0, lt=1.0)
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    n_resamples: int = Field(default=9999, ge=99)


class Interpretation(_Strict):
    meaning: str = Field(min_length=1)
    next_step: str = Field(min_length=1)


class ChecklistItem(_Strict):
    """A machine-checked predicate ``metric op value`` on logged evidence.

    ``scope: training_runs``: the metric of every training run (baseline and variants, every seed);
    ``scope: variants``: ``<variant>/<metric>`` of the comparison run, for every variant.
    """

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    phase: Literal["before", "during", "after"]
    description: str = Field(min_length=1)
    scope: Literal["training_runs", "variants"] = "training_runs"
    metric: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_./-]+$")
    op: Op
    value: float


class Rollback(_Strict):
    rule: str = Field(min_length=1)


class TrainingMission(_Strict):
    kind: Literal["training"]
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    title: str = Field(min_length=1)
    hypothesis: str = Field(min_length=1)
    baseline: Baseline
    data: Data = Data()
    seeds: tuple[int, ...] = Field(min_length=3)
    budget: Budget
    metrics: tuple[str, ...] = Field(min_length=1)
    gates: Gates
    decisions: dict[Literal["ADOPT", "PARTIAL", "ROLLBACK"], Interpretation]
    variants: tuple[Variant, ...] = Field(min_length=1)
    checklist: tuple[ChecklistItem, ...] = ()
    rollback: Rollback

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
            raise ValueError(f"seeds {list(seeds)}: give at least three distinct non-negative training seeds, e.g. [0, 1, 2]")
        return seeds

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"metrics {unknown} cannot be re-diagnosed on a trained model: use some of {list(METRICS)}")
        return metrics

    @field_validator("decisions")
    @classmethod
    def _every_decision(cls, decisions: dict) -> dict:
        missing = [d for d in DECISIONS if d not in decisions]
        if missing:
            raise ValueError(f"decisions lacks {missing}: give each of ADOPT, PARTIAL, ROLLBACK a meaning and a next_step")
        return decisions

    @model_validator(mode="after")
    def _consistent(self) -> TrainingMission:
        if self.gates.metric not in self.metrics:
            raise ValueError(f"gates.metric {self.gates.metric!r} is not in metrics {list(self.metrics)}: add it there")
        names = [self.baseline.name] + [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique and differ from the baseline's ({self.baseline.name!r})")
        ids = [c.id for c in self.checklist]
        if len(set(ids)) != len(ids):
            raise ValueError("checklist ids must be unique")
        for v in self.variants:
            self.variant_config(v)  # every delta checked against the baseline
        runs = len(names) * len(self.seeds)
        if runs > self.budget.max_training_runs:
            raise ValueError(f"{len(names)} configurations × {len(self.seeds)} seeds = {runs} training runs exceed "
                             f"budget.max_training_runs {self.budget.max_training_runs}: raise the budget or drop variants/seeds")
        return self

    def variant_config(self, variant: Variant) -> TrainConfig:
        base = self.baseline.config
        seen = set()
        for d in variant.deltas:
            where = f"variant {variant.name}, delta {d.parameter}"
            if d.parameter in seen:
                raise ValueError(f"{where}: the parameter is changed twice; keep one delta")
            seen.add(d.parameter)
            try:
                current = base.value(d.parameter)
            except KeyError as exc:
                raise ValueError(f"{where}: {exc.args[0]}") from None
            if current != d.baseline:
                raise ValueError(f"{where}: baseline value {d.baseline!r} is not the baseline config's {current!r}: "
                                 "copy the value from baseline.config")
            if d.new == d.baseline:
                raise ValueError(f"{where}: new value equals the baseline value; a delta must change something")
        try:
            return apply_deltas(base, {d.parameter: d.new for d in variant.deltas})
        except ValidationError as exc:
            raise ValueError(f"variant {variant.name}: its config is invalid: {_explain(exc)}") from None

    def configs(self) -> dict[str, TrainConfig]:
        """Baseline first, then every variant: name → full config."""
        return {self.baseline.name: self.baseline.config} | {v.name: self.variant_config(v) for v in self.variants}

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)


def parse_training_mission(text: str, source: str = "<mission>") -> TrainingMission:
    return parse_yaml_model(text, source, TrainingMission, "missions/week2-mitigation.yaml")


def load_training_mission(path: str | Path) -> TrainingMission:
    return parse_training_mission(read_mission_text(path), str(path))


def prepare_training_mission(mission_path: str | Path, samples: int | None = None) -> TrainingMission:
    """Load and apply the CLI overrides (``--samples``: held-out samples); MissionError names the input and the fix."""
    mission = load_training_mission(mission_path)
    if samples is not None:
        if samples < 8:
            raise MissionError(f"--samples {samples}: use at least 8 held-out samples (the paired statistics need them)")
        mission = mission.model_copy(update={"data": mission.data.model_copy(update={"eval_samples": samples})})
    return mission


__all__ = ["TrainingMission", "load_training_mission", "prepare_training_mission", "parse_training_mission", "parameters"]
