"""Histogram of the per-sample image share of each model: what the mean share hides."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def reliance_histogram(scores: pd.DataFrame, threshold: float, path: str | Path) -> Path:
    """One panel per model (``scores``: columns model, value): the per-sample share, with the threshold lines.

    Mass beyond ``threshold`` (image) or below ``1 - threshold`` (text) is per-sample reliance on one modality;
    mass on both sides is per-sample dominance with mixed direction.
    """
    models = list(dict.fromkeys(scores["model"]))
    fig = Figure(figsize=(6.5, 1.6 * max(1, len(models)) + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(1, len(models)), 1, sharex=True, squeeze=False)[:, 0]
    bins = np.linspace(0, 1, 41)
    for ax, model in zip(axes, models):
        values = scores.loc[scores["model"] == model, "value"].to_numpy(dtype=float)
        ax.hist(values, bins=bins, color="tab:blue")
        for x in (1 - threshold, threshold):
            ax.axvline(x, color="tab:red", linestyle="--", linewidth=1)
        ax.axvline(0.5, color="gray", linewidth=0.8)
        ax.set_ylabel("samples")
        ax.set_title(f"{model} (n = {values.size})", fontsize=9, loc="left")
    axes[-1].set_xlabel("per-sample image share s (0 = text only, 1 = image only); dashed: collapse thresholds")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
