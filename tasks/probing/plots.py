"""Figures of a probing cycle: probe quality along a model's points (with CIs and the control), CKA heatmaps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tasks.evidence import schema

CURVES = (("spatial_iou", "Spatial IoU"), ("bbox_iou", "Bbox IoU"), ("map50", "mAP@0.5"), ("position_accuracy", "position acc."))


def layer_curves(model: str, points: list[str], metrics: dict[str, dict[str, float]], thresholds: dict[str, float],
                 path: Path) -> Path:
    """One line per metric over the points in order, CI95 as error bars, the control dashed, thresholds dotted."""
    fig = Figure(figsize=(7.5, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(points))
    for i, (key, label) in enumerate(CURVES):
        if not all(key in metrics.get(p, {}) for p in points):
            continue
        colour = f"C{i}"
        y = np.array([metrics[p][key] for p in points])
        low = np.array([metrics[p].get(schema.metric_field_key(key, "ci_low"), np.nan) for p in points])
        high = np.array([metrics[p].get(schema.metric_field_key(key, "ci_high"), np.nan) for p in points])
        err = np.vstack([np.nan_to_num(y - low), np.nan_to_num(high - y)])
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colour, label=label)
        control = [metrics[p].get(schema.metric_field_key(key, "control"), np.nan) for p in points]
        ax.plot(x, control, ls="--", color=colour, alpha=0.6, label=f"{label}, control task")
        if key in thresholds:
            ax.axhline(thresholds[key], ls=":", color=colour, alpha=0.8)
    ax.set_xticks(x, points)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("extraction point (input → output)")
    ax.set_ylabel("probe score on held-out images")
    ax.set_title(f"{model}: spatial probes along the model (CI95; dashed: control task; dotted: threshold)", fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def cka_heatmap(model: str, names: list[str], linear: np.ndarray, debiased: np.ndarray, path: Path) -> Path:
    fig = Figure(figsize=(9, 4))
    FigureCanvasAgg(fig)
    for k, (matrix, title) in enumerate(((linear, "linear CKA"), (debiased, "debiased linear CKA"))):
        ax = fig.add_subplot(1, 2, k + 1)
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] < 0.6 else "black")
        ax.set_title(f"{model}: {title}", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
