"""Run the per-sample diagnostics of one model over a dataset, in batches.

Every metric that the model's capabilities allow is computed; the others
stay NaN, so tables of all models share one schema:

| column | needs |
|---|---|
| v_*, phi_*, modality_shapley_v, ablation_visual_share | score + mask (4 passes) |
| shapley_v_image_blur/_other, shapley_v_text_empty/_other (tasks.diagnostics.baselines) | score + mask (8 more passes) |
| mm_shap_v, mm_shap_se, mm_shap_evals, mm_shap_permutations, mm_shap_sum_image/_text, mm_shap_signed_v | score + mask_tokens (+ separable: cheaper) |
| attn_visual_share, mcs_entropy, attn_*_efficiency, attn_efficiency_ratio | trace (layer means) |
| rollout_visual_share | rollout (trace extras; the last layer's value) |
| relevance_visual_share | relevance |

Memory stays flat in the number of samples: attention is reduced inside
the adapters' hooks, and only the first ``keep_maps`` samples' maps are kept.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from tasks.diagnostics.ablation import ablation_visual_share
from tasks.diagnostics.attention import attention_efficiency, mcs_entropy
from tasks.diagnostics.baselines import COLUMNS as BASELINE_COLUMNS, baseline_shares
from tasks.diagnostics.mm_shap import mm_shap
from tasks.diagnostics.shapley import modality_shapley

if TYPE_CHECKING:  # the contract types annotate; at run time any object with the capabilities serves
    from tasks.adapters.contract import AttentionSummary, LoadedModel

# 2: ablation, MM-SHAP, rollout, relevance, per-token efficiency added; per_layer gained columns.
METRICS_VERSION = "3"  # bump when a metric's definition changes: invalidates cached diagnostics
# 3: MM-SHAP draws each sample's orders from (seed, sample id), not one stream shared by the batch

# 16 orders (8 antithetic pairs) per sample: on 64 zoo samples a per-sample standard error of ≤ 0.006 for
# the one-sided models and 0.06 on average (≤ 0.12) for the balanced one, for 4–5 s of CPU (~6–8 s wall on
# a busy 2-core machine) per zoo model. A random-init model gets none by default: its values are no
# evidence (the gates exclude it), and on a CPU MM-SHAP of a ViT-B-32 costs ~15 s per sample even on the
# separable route (benchmarks/mm_shap_cost.py). Pass an int to override either.
MM_SHAP_PERMUTATIONS = 16
MM_SHAP_PERMUTATIONS_RANDOM_INIT = 0

PER_SAMPLE_COLUMNS = (
    "sample_id", "v_full", "v_image_only", "v_text_only", "v_empty", "phi_image", "phi_text",
    "modality_shapley_v", *BASELINE_COLUMNS, "ablation_visual_share", "mm_shap_v", "mm_shap_se", "mm_shap_evals",
    "mm_shap_permutations", "mm_shap_sum_image", "mm_shap_sum_text", "mm_shap_signed_v", "attn_visual_share", "mcs_entropy", "attn_visual_efficiency", "attn_text_efficiency",
    "attn_efficiency_ratio", "attn_other_share", "attn_sink_mass", "attn_visual_share_sink_aware",
    "rollout_visual_share", "relevance_visual_share",
)
PER_LAYER_COLUMNS = (
    "sample_id", "layer", "layer_index", "attn_visual_share", "attn_text_share", "attn_other_share", "attn_sink_mass",
    "attn_visual_share_sink_aware", "entropy_visual", "entropy_text",
    "mcs_entropy", "attn_visual_efficiency", "attn_text_efficiency", "attn_efficiency_ratio", "rollout_visual_share",
)
_LAYER_MEANS = ("attn_visual_share", "mcs_entropy", "attn_visual_efficiency", "attn_text_efficiency",
                "attn_efficiency_ratio", "attn_other_share", "attn_sink_mass", "attn_visual_share_sink_aware")


@dataclass
class DiagnosticResult:
    """Per-sample and per-layer values of one model; plain pandas so it pickles and caches."""

    model: str
    per_sample: pd.DataFrame   # one row per sample
    per_layer: pd.DataFrame    # one row per (sample, layer)
    skipped: pd.DataFrame      # sample_id, reason: samples that produced no value
    # Head-mean attention maps of the first few samples, for plots: sample_id → layer → [Q, K].
    attention_maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    retries: list[str] = field(default_factory=list)  # batches retried (out of memory → halved, I/O errors)
    # Where the image and text tokens sit in those maps: (image start, image stop, text start, text stop), for labels.
    map_spans: tuple[int, int, int, int] | None = None

    @property
    def n_layers(self) -> int:
        return int(self.per_layer["layer"].nunique()) if len(self.per_layer) else 0


def _trim_heap() -> None:
    """Hand freed heap pages back after each batch: without it glibc's fragmentation, not kept data, makes
    resident memory creep with the number of batches (benchmarks/diagnostic_memory.py measures it)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl): nothing to trim
        return None


_LIBC = _load_libc()


def diagnose(model: LoadedModel, samples: Sequence, batch_size: int = 32,
             mm_shap_permutations: int | None = None, mm_shap_target_se: float | None = None,
             keep_maps: int = 2, seed: int = 0) -> DiagnosticResult:
    """Every applicable metric for every sample; ``samples`` carry ``sample_id``, ``image`` (PIL) and ``caption``.

    MM-SHAP runs ``mm_shap_permutations`` orders per sample (None: 16, or 0
    for a random-init model), or with ``mm_shap_target_se`` until each
    sample's standard error reaches it (``mm_shap_permutations`` is then
    the maximum); 0 switches it off. ``keep_maps``: samples whose full
    attention maps are kept for plots.
    """
    caps = model.capabilities
    if mm_shap_permutations is None:
        mm_shap_permutations = MM_SHAP_PERMUTATIONS_RANDOM_INIT if model.random_init else MM_SHAP_PERMUTATIONS
    rows: list[pd.DataFrame] = []
    layers: list[pd.DataFrame] = []
    maps: dict[str, dict[str, np.ndarray]] = {}
    map_spans = None
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        images, captions, ids = [s.image for s in chunk], [s.caption for s in chunk], [s.sample_id for s in chunk]
        inputs = model.prepare(images, captions, ids)
        summary = None
        if "trace" in caps:  # first: its forward also gives the plain score (and a dual encoder's embeddings)
            k = max(0, min(keep_maps - len(maps), len(chunk))) if "maps" in caps else 0
            with torch.no_grad():
                summary = model.trace(inputs, keep_maps=k) if k else model.trace(inputs)
            table, kept, spans = _attention(summary, inputs, k)
            layers.append(table)
            maps.update(kept)
            map_spans = map_spans or (spans if kept else None)
        towers = _towers(model, inputs, summary) if {"separable", "mask"} <= caps else None
        row = _contributions(model, inputs, summary, towers)
        if "mask" in caps:  # the same share under other masking baselines (robustness of the verdict)
            v = {c: torch.tensor(row[c].to_numpy()) for c in ("v_full", "v_image_only", "v_text_only")}
            row = row.assign(**baseline_shares(model, images, captions, ids, v["v_full"], v["v_image_only"],
                                               v["v_text_only"], towers=towers))
        if "mask_tokens" in caps and mm_shap_permutations > 0:
            row = row.assign(**_mm_shap(model, images, captions, ids, mm_shap_permutations, mm_shap_target_se,
                                        seed + start))
        if "relevance" in caps:
            row["relevance_visual_share"] = model.relevance(inputs).detach().cpu().numpy()
        rows.append(row)
        del summary
        _trim_heap()
    per_sample = pd.concat(rows, ignore_index=True)
    per_layer = pd.concat(layers, ignore_index=True) if layers else pd.DataFrame(columns=list(PER_LAYER_COLUMNS))
    if len(per_layer):
        per_sample = per_sample.join(per_layer.groupby("sample_id", sort=False)[[c for c in _LAYER_MEANS if c in per_layer]].mean(),
                                     on="sample_id")
        # rollout's value is that of the last layer where it is defined (towers before the fusion have none)
        rolled = per_layer.dropna(subset=["rollout_visual_share"])
        last = rolled.loc[rolled.groupby("sample_id", sort=False)["layer_index"].idxmax()]
        per_sample = per_sample.join(last.set_index("sample_id")["rollout_visual_share"], on="sample_id")
    per_sample = per_sample.reindex(columns=_ordered(per_sample.columns, PER_SAMPLE_COLUMNS))
    undefined = per_sample[per_sample["modality_shapley_v"].isna()]
    reason = ("score independent of both modalities (φ_I = φ_T = 0)" if "mask" in caps
              else "the adapter cannot mask a modality (no 'mask' capability)")
    skipped = pd.DataFrame({"sample_id": undefined["sample_id"], "reason": reason})
    return DiagnosticResult(model.spec.name, per_sample, per_layer, skipped, maps, map_spans=map_spans)


def _ordered(present, wanted: tuple[str, ...]) -> list[str]:
    """The schema's columns first (NaN where a metric does not apply), then any extra ones."""
    return list(wanted) + [c for c in present if c not in wanted]


def _contributions(model: LoadedModel, inputs, summary: AttentionSummary | None = None,
                   towers: tuple[torch.Tensor, ...] | None = None) -> pd.DataFrame:
    """The four coalition values and what they give, from the fewest passes the model allows.

    The traced forward's score is v(I, T) where the trace has it. A dual encoder (capability
    "separable") needs no pass of the whole model per coalition: v(I), v(T) and v(∅) pair the full
    embeddings (the trace's, where it ran) with the towers' embeddings of the masked batch, and a
    whole-modality baseline is the same row across the batch, so each tower runs it once
    (tasks.adapters.towers). Same values as four score() calls, up to float rounding.
    """
    caps = model.capabilities
    with torch.no_grad():
        if towers is not None or ("separable" in caps and "mask" in caps):
            v_full, v_image, v_text, v_empty = _separable_values(model, summary, towers or _towers(model, inputs, summary))
        else:
            v_full = summary.score if summary is not None and summary.score is not None else model.score(inputs)
            if "mask" not in caps:
                return pd.DataFrame({"sample_id": inputs.sample_ids, "v_full": v_full.float().cpu().numpy()})
            v_image = model.score(model.mask(inputs, image_keep=True, text_keep=False))
            v_text = model.score(model.mask(inputs, image_keep=False, text_keep=True))
            v_empty = model.score(model.mask(inputs, image_keep=False, text_keep=False))
    v_full, v_image, v_text, v_empty = (v.float().cpu() for v in (v_full, v_image, v_text, v_empty))
    values = modality_shapley(v_full, v_image, v_text, v_empty)
    return pd.DataFrame({
        "sample_id": inputs.sample_ids,
        "v_full": v_full.numpy(), "v_image_only": v_image.numpy(), "v_text_only": v_text.numpy(), "v_empty": v_empty.numpy(),
        **{k: t.numpy() for k, t in values.items()},
        "ablation_visual_share": ablation_visual_share(v_full, v_image, v_text).numpy(),
    })


def _towers(model, inputs, summary: AttentionSummary | None) -> tuple[torch.Tensor, ...]:
    """A dual encoder's image, text, masked-image and masked-text embeddings of a batch (the trace's where it ran)."""
    with torch.no_grad():
        if summary is not None and summary.embeddings is not None:
            image, text = summary.embeddings
        else:
            image, text = model.encode_image(inputs), model.encode_text(inputs)
        masked = model.mask(inputs, image_keep=False, text_keep=False)
        return image, text, model.encode_image(masked), model.encode_text(masked)


def _separable_values(model, summary: AttentionSummary | None, towers: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """v(I,T), v(I), v(T), v(∅) of a dual encoder from its tower embeddings."""
    image, text, no_image, no_text = towers
    v_full = summary.score if summary is not None and summary.score is not None else model.similarity(image, text)
    return v_full, model.similarity(image, no_text), model.similarity(no_image, text), \
        model.similarity(no_image, no_text)


def _mm_shap(model, images, captions, ids, permutations: int, target_se: float | None, seed: int) -> dict:
    result = mm_shap(model, images, captions, ids, permutations=permutations, target_se=target_se, seed=seed)
    # Signed sums beside V-SHAP: players whose values cancel inflate a modality's sum of |φ| but not its signed sum.
    sum_image = np.array([float(p.sum()) if p.numel() else np.nan for p in result.phi_image])
    sum_text = np.array([float(p.sum()) if p.numel() else np.nan for p in result.phi_text])
    total = np.abs(sum_image) + np.abs(sum_text)
    with np.errstate(invalid="ignore", divide="ignore"):
        signed = np.where(total > 1e-12, np.abs(sum_image) / total, np.nan)
    return {"mm_shap_v": result.v.numpy(), "mm_shap_se": result.se.numpy(), "mm_shap_evals": result.evals.numpy(),
            "mm_shap_permutations": result.permutations.numpy(), "mm_shap_sum_image": sum_image,
            "mm_shap_sum_text": sum_text, "mm_shap_signed_v": signed}


def _attention(summary: AttentionSummary, inputs, keep_maps: int) -> tuple[pd.DataFrame, dict, tuple[int, int, int, int] | None]:
    b, n_layers = summary.visual_share.shape
    per_sample_text = summary.n_text_per_sample
    n_text = summary.n_text_tokens if per_sample_text is None else per_sample_text.reshape(-1, 1)
    columns = {
        "attn_visual_share": summary.visual_share, "attn_text_share": summary.text_share,
        "entropy_visual": summary.entropy_visual, "entropy_text": summary.entropy_text,
        "mcs_entropy": mcs_entropy(summary.entropy_visual, summary.entropy_text),
        **attention_efficiency(summary.visual_share, summary.text_share, summary.n_image_tokens, n_text),
        **{f"attn_{k}": getattr(summary, k) for k in ("other_share", "sink_mass", "visual_share_sink_aware")
           if getattr(summary, k) is not None},
        "rollout_visual_share": torch.full((b, n_layers), float("nan")),
        **summary.extras,  # per-layer statistics of the architecture, rollout among them
    }
    table = pd.DataFrame({
        "sample_id": [sid for sid in inputs.sample_ids for _ in range(n_layers)],
        "layer": summary.layer_names * b,
        "layer_index": list(range(n_layers)) * b,
        **{name: values.reshape(-1).float().cpu().numpy() for name, values in columns.items()},
    })
    table = table.reindex(columns=_ordered(table.columns, PER_LAYER_COLUMNS))
    kept = {sid: {layer: m[i].float().cpu().numpy() for layer, m in summary.maps.items()}
            for i, sid in enumerate(inputs.sample_ids[:keep_maps])} if summary.maps else {}
    spans = (*summary.spans.image, *summary.spans.text) if summary.spans else None
    return table, kept, spans
