"""Run the per-sample diagnostics of one model over a dataset, in batches."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from tasks.adapters.base import LoadedModel
from tasks.diagnostics.attention import mcs_entropy
from tasks.diagnostics.shapley import modality_shapley

METRICS_VERSION = "1"  # bump when a metric's definition changes: invalidates cached diagnostics


@dataclass
class DiagnosticResult:
    """Per-sample and per-layer values of one model; plain pandas so it pickles and caches."""

    model: str
    per_sample: pd.DataFrame   # one row per sample
    per_layer: pd.DataFrame    # one row per (sample, layer)
    skipped: pd.DataFrame      # sample_id, reason: samples that produced no value

    @property
    def n_layers(self) -> int:
        return int(self.per_layer["layer"].nunique()) if len(self.per_layer) else 0


def diagnose(model: LoadedModel, samples: Sequence, batch_size: int = 32) -> DiagnosticResult:
    """Score every sample four times (Shapley) and trace its attention once.

    ``samples`` carry ``sample_id``, ``image`` (PIL) and ``caption``.
    """
    rows: list[pd.DataFrame] = []
    layers: list[pd.DataFrame] = []
    can_trace = "trace" in model.capabilities
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        inputs = model.prepare([s.image for s in chunk], [s.caption for s in chunk], [s.sample_id for s in chunk])
        rows.append(_contributions(model, inputs))
        if can_trace:
            layers.append(_attention(model, inputs))
    per_sample = pd.concat(rows, ignore_index=True)
    per_layer = pd.concat(layers, ignore_index=True) if layers else pd.DataFrame(
        columns=["sample_id", "layer", "attn_visual_share", "entropy_visual", "entropy_text", "mcs_entropy"])
    if len(per_layer):
        means = per_layer.groupby("sample_id", sort=False)[["attn_visual_share", "mcs_entropy"]].mean()
        per_sample = per_sample.join(means, on="sample_id")
    undefined = per_sample[per_sample["modality_shapley_v"].isna()]
    skipped = pd.DataFrame({"sample_id": undefined["sample_id"], "reason": "score independent of both modalities (φ_I = φ_T = 0)"})
    return DiagnosticResult(model.spec.name, per_sample, per_layer, skipped)


def _contributions(model: LoadedModel, inputs) -> pd.DataFrame:
    with torch.no_grad():
        v_full = model.score(inputs)
        v_image = model.score(model.mask(inputs, image_keep=True, text_keep=False))
        v_text = model.score(model.mask(inputs, image_keep=False, text_keep=True))
        v_empty = model.score(model.mask(inputs, image_keep=False, text_keep=False))
    values = modality_shapley(v_full, v_image, v_text, v_empty)
    return pd.DataFrame({
        "sample_id": inputs.sample_ids,
        "v_full": v_full.numpy(), "v_image_only": v_image.numpy(), "v_text_only": v_text.numpy(), "v_empty": v_empty.numpy(),
        **{k: t.numpy() for k, t in values.items()},
    })


def _attention(model: LoadedModel, inputs) -> pd.DataFrame:
    with torch.no_grad():
        summary = model.trace(inputs)
    b, n_layers = summary.visual_share.shape
    mcs = mcs_entropy(summary.entropy_visual, summary.entropy_text)
    return pd.DataFrame({
        "sample_id": [sid for sid in inputs.sample_ids for _ in range(n_layers)],
        "layer": summary.layer_names * b,
        "layer_index": list(range(n_layers)) * b,
        "attn_visual_share": summary.visual_share.reshape(-1).numpy(),
        "entropy_visual": summary.entropy_visual.reshape(-1).numpy(),
        "entropy_text": summary.entropy_text.reshape(-1).numpy(),
        "mcs_entropy": mcs.reshape(-1).numpy(),
    })
