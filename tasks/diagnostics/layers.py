"""Layer profiles: how each attention metric evolves with depth, and where imbalance develops.

Pure functions on ``DiagnosticResult.per_layer`` (one row per sample and
layer). The per-layer confidence interval is a t-interval over samples;
the statistics module does the model-level inference.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

# Per-layer metrics that are shares in [0, 1] (imbalance = max(s, 1 − s) applies)…
SHARE_METRICS = ("attn_visual_share", "rollout_visual_share", "mcs_entropy")
# …and every per-layer attention metric a profile covers.
ATTENTION_METRICS = SHARE_METRICS + ("attn_visual_efficiency", "attn_text_efficiency", "attn_efficiency_ratio")
THIRDS = ("early", "middle", "late")


def layer_profile(per_layer: pd.DataFrame, metrics: tuple[str, ...] | None = None,
                  confidence: float = 0.95) -> pd.DataFrame:
    """Per (metric, layer): n, mean, sd, and a t confidence interval of the mean over samples.

    ``metrics`` defaults to every attention metric present with at least one
    value. Layers where a metric is undefined (all NaN, e.g. a dual
    encoder's towers) are left out.
    """
    columns = ["metric", "layer_index", "layer", "n", "mean", "sd", "ci_low", "ci_high"]
    if not len(per_layer):
        return pd.DataFrame(columns=columns)
    wanted = metrics if metrics is not None else tuple(
        m for m in ATTENTION_METRICS if m in per_layer and per_layer[m].notna().any())
    missing = [m for m in wanted if m not in per_layer]
    if missing:
        raise KeyError(f"per_layer has no column(s) {missing}; it has {list(per_layer.columns)}")
    names = per_layer.groupby("layer_index")["layer"].first()
    frames = []
    for metric in wanted:
        g = per_layer.groupby("layer_index")[metric]
        table = pd.DataFrame({"n": g.count(), "mean": g.mean(), "sd": g.std(ddof=1)}).dropna(subset=["mean"])
        half = stats.t.ppf((1 + confidence) / 2, df=(table["n"] - 1).clip(lower=1)) * table["sd"] / np.sqrt(table["n"])
        half = half.where(table["n"] >= 2)  # one sample: no interval
        table["ci_low"], table["ci_high"] = table["mean"] - half, table["mean"] + half
        table["metric"], table["layer"] = metric, names.reindex(table.index).to_numpy()
        frames.append(table.reset_index())
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def depth_third(position: int, depth: int) -> str:
    """early / middle / late for a layer's position 0..depth−1 (thirds of depth, the remainder goes later)."""
    return THIRDS[min(2, 3 * position // max(depth, 1))]


@dataclass(frozen=True)
class ImbalanceFinding:
    """Where imbalance of one share metric develops along depth."""

    metric: str
    third: str | None                  # the third with the largest mean imbalance; None without values
    third_imbalance: float             # that third's mean of per-layer imbalance max(s̄, 1 − s̄)
    toward: str | None                 # "image" or "text": the side the largest third leans to
    first_layer: int | None            # the first layer whose imbalance exceeds the threshold
    first_third: str | None
    peak_layer: int | None
    peak_imbalance: float
    threshold: float
    text: str

    def __str__(self) -> str:
        return self.text


def imbalance_finding(per_layer: pd.DataFrame, metric: str = "attn_visual_share",
                      threshold: float = 0.8) -> ImbalanceFinding:
    """Where imbalance of ``metric`` develops: the depth third with the largest imbalance and the first crossing.

    Imbalance of a layer is max(s̄, 1 − s̄) of its mean share over samples;
    the thirds split the model's layers (every ``layer_index`` in the
    table, also those where the metric is undefined) into early / middle / late.
    """
    if metric not in SHARE_METRICS:
        raise ValueError(f"{metric!r} is not a share metric; imbalance applies to {SHARE_METRICS}")
    empty = ImbalanceFinding(metric, None, float("nan"), None, None, None, None, float("nan"), threshold,
                             f"{metric}: no per-layer values (no cross-modal attention in this architecture)")
    if not len(per_layer) or metric not in per_layer:
        return empty
    order = sorted(per_layer["layer_index"].unique())
    position = {layer: i for i, layer in enumerate(order)}
    means = per_layer.groupby("layer_index")[metric].mean().dropna()
    if not len(means):
        return empty
    table = pd.DataFrame({"mean": means, "imbalance": np.maximum(means, 1 - means)})
    table["third"] = [depth_third(position[i], len(order)) for i in table.index]
    by_third = table.groupby("third", sort=False)[["imbalance", "mean"]].mean()
    third = by_third["imbalance"].idxmax()
    toward = "image" if by_third.loc[third, "mean"] > 0.5 else "text"
    crossed = table.index[table["imbalance"] > threshold]
    peak = int(table["imbalance"].idxmax())
    span = table.index[table["third"] == third]
    where = f"layer {span[0]}" if len(span) == 1 else f"layers {span[0]}–{span[-1]}"
    text = (f"{metric}: imbalance is largest in the {third} third ({where} of {len(order)}; "
            f"mean {by_third.loc[third, 'imbalance']:.2f}, toward {toward}); ")
    if len(crossed):
        first = int(crossed[0])
        text += f"it first exceeds {threshold:.2f} at layer {first} ({table.loc[first, 'third']} third)."
    else:
        first = None
        text += f"it never exceeds {threshold:.2f} (peak {table.loc[peak, 'imbalance']:.2f} at layer {peak})."
    return ImbalanceFinding(metric, third, float(by_third.loc[third, "imbalance"]), toward, first,
                            None if first is None else table.loc[first, "third"], peak,
                            float(table.loc[peak, "imbalance"]), threshold, text)
