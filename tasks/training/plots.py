"""The handoff's figures: training and gradient-flow curves, the before/after forest plot, ablation curves.

Each takes plain frames (read back from the evidence) and writes a PNG with
Matplotlib's Agg canvas (no display needed).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def training_curves(curves: pd.DataFrame, path: Path) -> Path:
    """Task loss per step, one line per configuration (mean over seeds). ``curves``: config, seed, step, loss_task."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for name, g in curves.groupby("config", sort=False):
        mean = g.groupby("step")["loss_task"].mean()
        ax.plot(mean.index, mean.values, label=name)
    ax.set(xlabel="training step", ylabel="task loss (mean over seeds)", title="Training curves")
    ax.legend(fontsize=7)
    return _save(fig, path)


def gradient_flow(grads: pd.DataFrame, path: Path) -> Path:
    """Per pathway, its gradient norm per step (layers combined, mean over seeds), one line per configuration."""
    from tasks.training.gradient_flow import pathway_totals

    pathways = ["image", "text", "fusion"]
    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, len(pathways), sharey=True)
    for ax, pathway in zip(axes, pathways):
        for name, g in grads.groupby("config", sort=False):
            totals = pd.concat([pathway_totals(s) for _, s in g.groupby("seed")])
            mean = totals[totals["pathway"] == pathway].groupby("step")["norm"].mean()
            if len(mean):
                ax.plot(mean.index, mean.clip(lower=1e-8).values, label=name)
        ax.set(yscale="log", xlabel="training step", title=f"{pathway} pathway")
    axes[0].set_ylabel("gradient norm")
    axes[-1].legend(fontsize=7)
    return _save(fig, path)


def before_after(rows: pd.DataFrame, path: Path) -> Path:
    """Each variant's paired difference from the baseline with its CI: visual share and accuracy side by side.

    ``rows``: variant, decision, share_diff, share_low, share_high, acc_diff, acc_low, acc_high.
    """
    colours = {"ADOPT": "tab:green", "PARTIAL": "tab:orange", "ROLLBACK": "tab:red"}
    fig = Figure(figsize=(9, 0.6 * len(rows) + 1.6))
    axes = fig.subplots(1, 2, sharey=True)
    y = list(range(len(rows)))[::-1]
    for ax, (col, title) in zip(axes, (("share", "Δ visual share (variant − baseline)"), ("acc", "Δ accuracy"))):
        for yi, r in zip(y, rows.itertuples()):
            mid, low, high = getattr(r, f"{col}_diff"), getattr(r, f"{col}_low"), getattr(r, f"{col}_high")
            ax.errorbar([mid], [yi], xerr=[[mid - low], [high - mid]], fmt="o", color=colours.get(r.decision, "black"), capsize=3)
        ax.axvline(0, color="gray", lw=0.8)
        ax.set(title=title)
    axes[0].set_yticks(y, [f"{r.variant} ({r.decision})" for r in rows.itertuples()])
    return _save(fig, path)


def ablation(points: pd.DataFrame, parameter: str, path: Path) -> Path:
    """Visual share and accuracy (means over seeds and samples) against one parameter's value.

    ``points``: value, share, accuracy, label — the baseline and the variants that change only ``parameter``.
    """
    points = points.sort_values("value")
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    ax.plot(points["value"], points["share"], "o-", color="tab:blue", label="visual share")
    ax.set(xlabel=parameter, ylabel="visual share", title=f"Ablation over {parameter}")
    twin = ax.twinx()
    twin.plot(points["value"], points["accuracy"], "s--", color="tab:gray", label="accuracy")
    twin.set_ylabel("accuracy")
    fig.legend(loc="lower right", fontsize=7)
    return _save(fig, path)
