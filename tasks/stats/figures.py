"""The statistics' figures: the forest plot of per-model mean visual share with its CI95 against the collapse
thresholds, and the histogram of each model's per-sample share (what the mean share hides)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = ["forest_plot", "forest_figure", "LABEL_COLOURS", "reliance_histogram"]

#: Marker colour per ``BalanceCall.label``; anything else is drawn black.
LABEL_COLOURS = {
    "collapsed": "tab:red",
    "imbalanced": "tab:orange",
    "per-sample dominance": "tab:purple",
    "balanced": "tab:green",
    "not shown to differ": "tab:gray",
    "not testable": "lightgray",
}


def forest_plot(per_model_frame: pd.DataFrame, threshold: float, baseline: float, path: str | Path) -> Path:
    """Draw ``forest_figure`` to ``path`` (PNG, Agg) and return the path."""
    return _save(forest_figure(per_model_frame, threshold, baseline), path)


def forest_figure(per_model_frame: pd.DataFrame, threshold: float, baseline: float) -> Figure:
    """One row per (model, metric): mean share and CI95, as a matplotlib Figure (Agg canvas).

    ``per_model_frame`` needs columns model, mean, ci_low, ci_high (as
    ``Analysis.per_model_frame()`` gives); metric and label are used when
    present (rows are named "model · metric" when there are several metrics;
    markers are coloured by label). Vertical lines mark the balanced
    ``baseline`` and the collapse thresholds ``1 - threshold`` and
    ``threshold``. A row with a NaN CI is drawn as a bare point. Uses a
    Figure with its own Agg canvas, so no global pyplot state is touched.
    """
    missing = [c for c in ("model", "mean", "ci_low", "ci_high") if c not in per_model_frame.columns]
    if missing:
        raise ValueError(f"forest_plot: per-model frame lacks column(s) {missing}; pass Analysis.per_model_frame()")
    frame = per_model_frame.reset_index(drop=True)
    several = "metric" in frame.columns and frame["metric"].nunique() > 1
    names = [f"{r.model} · {r.metric}" if several else str(r.model) for r in frame.itertuples()]
    y = np.arange(len(frame))[::-1]  # first row on top

    fig = Figure(figsize=(8.5, 1.6 + 0.45 * max(len(frame), 1)))  # wide enough that a CI of 0.01 is a visible bar
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.axvline(baseline, color="grey", ls=":", lw=1)
    for x in (1 - threshold, threshold):
        ax.axvline(x, color="tab:red", ls="--", lw=1)
    for yi, row in zip(y, frame.itertuples()):
        colour = LABEL_COLOURS.get(getattr(row, "label", ""), "black")
        lo, hi, mean = float(row.ci_low), float(row.ci_high), float(row.mean)
        if math.isfinite(lo) and math.isfinite(hi):
            ax.plot([lo, hi], [yi, yi], color=colour, lw=2, solid_capstyle="butt")
            for end in (lo, hi):  # caps: a CI narrower than the marker still shows its ends
                ax.plot([end, end], [yi - 0.18, yi + 0.18], color=colour, lw=1.5)
        if math.isfinite(mean):
            ax.plot([mean], [yi], "|", color="black", ms=9, mew=1.5)  # a thin mark: it does not hide a narrow CI
            # the numbers above the bar: a CI narrower than a pixel is still readable
            text = f"{mean:.3f} [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) and math.isfinite(hi) else f"{mean:.3f}"
            ax.annotate(text, (mean, yi), xytext=(0, 8), textcoords="offset points", fontsize=7,
                        ha="left" if mean < 0.25 else "right" if mean > 0.75 else "center")
    finite = pd.concat([frame["ci_low"], frame["ci_high"], frame["mean"]]).astype(float)
    finite = finite[np.isfinite(finite)]
    ax.set_xlim(min(0.0, finite.min() if len(finite) else 0.0) - 0.02, max(1.0, finite.max() if len(finite) else 1.0) + 0.02)
    ax.set_yticks(y, names)
    ax.set_ylim(-0.7, len(frame) - 0.3)
    ax.set_xlabel("visual share (mean, 95% CI)")
    ax.set_title(f"balanced = {baseline:g}; collapse beyond {1 - threshold:g} / {threshold:g}")
    handles = [Line2D([], [], color="grey", ls=":", label=f"balanced ({baseline:g})"),
               Line2D([], [], color="tab:red", ls="--", label=f"collapse thresholds ({1 - threshold:g}, {threshold:g})")]
    if "label" in frame.columns:
        handles += [Line2D([], [], color=LABEL_COLOURS.get(lbl, "black"), marker="o", lw=2, label=lbl)
                    for lbl in dict.fromkeys(frame["label"])]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


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
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (PNG, 110 dpi), making its folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
