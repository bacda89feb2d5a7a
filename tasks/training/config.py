"""One training run's configuration: the network, the loss, the gradient modulation and the recipe.

A mission's baseline is one ``TrainConfig``; each variant is that config with
a few *deltas* (``section.field``: baseline value → new value), applied by
``apply_deltas``. Every field is validated here, so a delta to a field that
does not exist, or to an impossible value, fails before anything trains.
"""
from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, model_validator

from tasks.mission import Strict as _Strict


class ModelConfig(_Strict):
    """A calibration-zoo-sized fusion transformer (tasks/training/model.py)."""

    image_size: int = Field(default=32, ge=8)
    patch: int = Field(default=8, ge=2)
    max_len: int = Field(default=8, ge=4)
    dim: int = Field(default=32, ge=8)
    heads: int = Field(default=4, ge=1)
    layers: int = Field(default=4, ge=1, le=12)
    # Progressive fusion: only the top ``fusion_depth`` layers attend across modalities; the ones below
    # are per-modality encoders. fusion_depth == layers is single-stream fusion from the first layer.
    fusion_depth: int = Field(default=4, ge=1, le=12)
    # Magnitude of the image token embeddings (the source documents' projector magnitude): a small value
    # is how the baseline is planted to under-use the image.
    image_scale: float = Field(default=1.0, gt=0.0, le=100.0)

    @model_validator(mode="after")
    def _shapes(self) -> ModelConfig:
        if self.fusion_depth > self.layers:
            raise ValueError(f"model.fusion_depth {self.fusion_depth} exceeds model.layers {self.layers}: "
                             "fuse at most every layer")
        if self.image_size % self.patch:
            raise ValueError(f"model.image_size {self.image_size} is not a multiple of model.patch {self.patch}")
        if self.dim % self.heads:
            raise ValueError(f"model.dim {self.dim} is not a multiple of model.heads {self.heads}")
        return self


class LossConfig(_Strict):
    """L = L_task + λ_v·L_visual + λ_t·L_text, each auxiliary term the task loss of one modality's own head."""

    lambda_visual: float = Field(default=0.0, ge=0.0, le=10.0)
    lambda_text: float = Field(default=0.0, ge=0.0, le=10.0)
    label_smoothing: float = Field(default=0.1, ge=0.0, lt=0.5)


class ModulationConfig(_Strict):
    """OGM-GE (Peng et al., CVPR 2022): the dominant modality's encoder gradient scaled by 1 − tanh(α·ρ), plus noise."""

    method: Literal["none", "ogm_ge"] = "none"
    alpha: float = Field(default=0.5, gt=0.0, le=10.0)
    start_step: int = Field(default=0, ge=0)
    end_step: int | None = Field(default=None, ge=0)  # None: until the last step


class RecipeConfig(_Strict):
    # SGD with momentum is what OGM-GE was designed for: Adam divides each gradient by its own running
    # scale, which undoes most of a gradient modulation (and of a planted small image magnitude).
    optimizer: Literal["sgd", "adamw"] = "adamw"
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    steps: int = Field(default=300, ge=1, le=100_000)
    batch_size: int = Field(default=64, ge=2, le=4096)
    lr: float = Field(default=3e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    max_mask_rate: float = Field(default=0.5, ge=0.0, le=1.0)      # per-sample masking rate ~ U(0, max)
    modality_dropout: float = Field(default=0.1, ge=0.0, le=0.5)   # chance of dropping a whole modality
    # Logging and checkpoints: they never reach the loss (a delta to them is the planted no-op).
    log_every: int = Field(default=10, ge=1)
    checkpoint_every: int = Field(default=50, ge=1)


class TrainConfig(_Strict):
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    modulation: ModulationConfig = ModulationConfig()
    recipe: RecipeConfig = RecipeConfig()

    def value(self, parameter: str):
        """The value at ``section.field``; KeyError naming the valid parameters if there is none."""
        section, _, name = parameter.partition(".")
        part = getattr(self, section, None) if section in type(self).model_fields else None
        if part is None or name not in type(part).model_fields:
            raise KeyError(f"unknown parameter {parameter!r}: use one of {', '.join(parameters())}")
        return getattr(part, name)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def parameters() -> list[str]:
    """Every ``section.field`` a delta may change."""
    return [f"{s}.{f}" for s, info in TrainConfig.model_fields.items() for f in info.annotation.model_fields]


def apply_deltas(base: TrainConfig, changes: dict[str, object]) -> TrainConfig:
    """``base`` with ``{section.field: new value}`` applied and the whole config validated again."""
    data = base.model_dump()
    for parameter, new in changes.items():
        base.value(parameter)  # raises on an unknown parameter
        section, _, name = parameter.partition(".")
        data[section][name] = new
    return TrainConfig.model_validate(data)
