"""A trained network behind the diagnostics' LoadedModel contract, so ``diagnose`` re-measures it unchanged.

The network takes the zoo's inputs (patches, word ids, padding) and masks
them with the zoo's baselines, so the zoo adapter's ``prepare``, ``score``,
``mask`` and ``mask_tokens`` apply as they are; attention tracing is not
offered (the mission's metric suite is contribution-based).
"""
from __future__ import annotations

from types import SimpleNamespace

from tasks.adapters.contract import ModelSpec
from tasks.adapters.zoo.calibration import ZooModel
from tasks.training.train import TrainResult


class TrainedModel(ZooModel):
    family = "fusion transformer (trained by a training mission)"
    capabilities = frozenset({"score", "mask", "mask_tokens"})
    random_init = False


def as_loaded_model(result: TrainResult, name: str) -> TrainedModel:
    m = result.config.model
    inputs = SimpleNamespace(image_size=m.image_size, patch=m.patch, max_len=m.max_len)
    spec = ModelSpec(name=name, adapter="training", source=name)
    return TrainedModel(spec, result.network().cpu(), inputs, f"{result.config.digest()}-seed{result.seed}", {}, True)
