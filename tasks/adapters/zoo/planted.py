"""Planted-truth models: scores in closed form, so each sample's exact modality share is known.

They check the step from numbers to verdicts (DESIGN.md, "Verdicts") the way
the calibration zoo checks the metrics, but with no training: the score is a
formula of two features, the image's contrast ``a`` (the standard deviation of
its grey levels; 0 for the mean image) and the caption's letter variety ``b``
(distinct letters / 26; 0 for a masked or empty caption). With both baselines
at 0 the two-player Shapley share has a closed form per ``spec.source``:

| source | score | image share s |
|---|---|---|
| image_only | a | 1 on every sample |
| text_only | b | 0 on every sample |
| constant | 0.9 [image present] + 0.1 [caption present] | 0.9 on every sample |
| additive | 3a + b | 3a / (3a + b) |
| multiplicative | a · b | 0.5 on every sample |
| mixed | a on half of the samples, b on the other half (by a hash of sample_id) | 1 or 0 |

``closed_form_share`` gives s from the same features, so tests compare the
measured share with the truth.
"""
from __future__ import annotations

import hashlib
import string

import numpy as np
import torch
from PIL import Image

from tasks.adapters.contract import Inputs, ModelSpec, Smoke

VARIANTS = ("image_only", "text_only", "constant", "additive", "multiplicative", "mixed")
_LETTERS = frozenset(string.ascii_lowercase)


def image_feature(image: Image.Image) -> float:
    """Contrast: SD of the grey levels in [0, 1] (0 for a flat image such as the mean image)."""
    return float(np.asarray(image.convert("L"), dtype=np.float64).std() / 255.0)


def text_feature(caption: str) -> float:
    """Letter variety: distinct letters / 26 (0 for an empty caption)."""
    return len(set(caption.lower()) & _LETTERS) / 26.0


def uses_image(sample_id: str) -> bool:
    """The mixed model's per-sample switch: a stable hash of the sample id."""
    return hashlib.sha256(sample_id.encode()).digest()[0] % 2 == 0


def closed_form_share(variant: str, a: float, b: float, sample_id: str = "") -> float:
    """The exact two-player Shapley image share of ``variant`` for features ``a``, ``b`` (baselines 0)."""
    if variant == "image_only":
        return 1.0
    if variant == "text_only":
        return 0.0
    if variant == "constant":
        return 0.9
    if variant == "additive":
        return 3 * a / (3 * a + b)
    if variant == "multiplicative":
        return 0.5
    if variant == "mixed":
        return 1.0 if uses_image(sample_id) else 0.0
    raise ValueError(f"unknown planted variant {variant!r}; valid: {', '.join(VARIANTS)}")


class PlantedModel:
    family = "planted truth (closed form)"
    capabilities = frozenset({"score", "mask"})
    random_init = False

    def __init__(self, spec: ModelSpec):
        self.spec, self.variant, self.revision = spec, spec.source, f"planted-{spec.source}-1"

    def prepare(self, images: list[Image.Image], captions: list[str], sample_ids: list[str]) -> Inputs:
        a = torch.tensor([image_feature(im) for im in images], dtype=torch.float64)
        b = torch.tensor([text_feature(c) for c in captions], dtype=torch.float64)
        return Inputs({"a": a, "b": b, "image_on": torch.ones_like(a), "text_on": torch.ones_like(b),
                       "use_image": torch.tensor([uses_image(s) for s in sample_ids])}, list(sample_ids))

    def mask(self, inputs: Inputs, image_keep: bool, text_keep: bool) -> Inputs:
        """The baselines: the mean image (contrast 0) and the masked caption (no letters)."""
        t = dict(inputs.tensors)
        if not image_keep:
            t["a"], t["image_on"] = torch.zeros_like(t["a"]), torch.zeros_like(t["a"])
        if not text_keep:
            t["b"], t["text_on"] = torch.zeros_like(t["b"]), torch.zeros_like(t["b"])
        return Inputs(t, list(inputs.sample_ids), dict(inputs.meta))

    def score(self, inputs: Inputs) -> torch.Tensor:
        t = inputs.tensors
        a, b = t["a"], t["b"]
        score = {"image_only": lambda: a, "text_only": lambda: b, "additive": lambda: 3 * a + b,
                 "constant": lambda: 0.9 * t["image_on"] + 0.1 * t["text_on"], "multiplicative": lambda: a * b,
                 "mixed": lambda: torch.where(t["use_image"], a, b)}[self.variant]()
        return score.float()


class PlantedAdapter:
    """Opens planted-truth models; ``spec.source`` names the variant (always available: nothing to download)."""

    name = "planted"
    family = PlantedModel.family
    capabilities = PlantedModel.capabilities
    smoke = Smoke(source="additive", weights=False)  # closed form: nothing to download, nothing Blocked

    def locate(self, spec: ModelSpec) -> tuple[bool, list[str]]:
        return True, ["(closed form, no weights)"]

    def load(self, spec: ModelSpec) -> PlantedModel:
        if spec.source not in VARIANTS:
            raise ValueError(f"planted model {spec.name}: unknown variant {spec.source!r}; valid: {', '.join(VARIANTS)}")
        return PlantedModel(spec)
