"""The mitigation task on the synthetic shapes, with a text shortcut planted.

Target: the image shows a round-cornered shape class (circle or square, as
opposed to triangle or cross). The caption names the image's shape only with
probability ``text_reliability`` (otherwise another shape), so the text is a
fast but imperfect shortcut — a word — while the image needs the shape read
from pixels, and is needed for the last points of accuracy: the setting in which a fusion model learns
to lean on one modality (Peng et al., 2022; Wang et al., 2020).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch

from tasks.adapters.zoo.calibration import _encode, _patchify
from tasks.data.synthetic import SHAPES, Sample, caption_for, dataset_hash, make_synthetic


POSITIVE = frozenset({"circle", "square"})


@dataclass(frozen=True)
class TaskData:
    samples: list[Sample]      # captions rewritten by the task's rule
    targets: torch.Tensor      # [n] float 0/1

    @property
    def content_hash(self) -> str:
        return dataset_hash(self.samples)


def make_task(n: int, seed: int, text_reliability: float, image_size: int = 32) -> TaskData:
    """``n`` samples, identical for identical arguments."""
    rng = random.Random(seed + 7919)
    samples = []
    for s in make_synthetic(n, seed, image_size):
        shown = s.attributes
        shape = shown["shape"]
        if rng.random() >= text_reliability:
            shape = rng.choice([c for c in SHAPES if c != shown["shape"]])
        said = {**shown, "shape": shape}
        samples.append(replace(s, caption=caption_for(said["shape"], said["colour"], said["position"]),
                               caption_attributes=said, matches=said == shown))
    targets = torch.tensor([s.attributes["shape"] in POSITIVE for s in samples], dtype=torch.float32)
    return TaskData(samples, targets)


@dataclass
class Tensors:
    """A task set as model inputs: raw patches [n, N, 3·p²], token ids and padding [n, L], targets [n]."""

    raw: torch.Tensor
    ids: torch.Tensor
    padding: torch.Tensor
    targets: torch.Tensor


def as_tensors(task: TaskData, image_size: int, patch: int, max_len: int) -> Tensors:
    ids, padding = _encode([s.caption for s in task.samples], max_len)
    return Tensors(_patchify([s.image for s in task.samples], image_size, patch), ids, padding, task.targets)
