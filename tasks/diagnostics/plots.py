"""The three plots the Week-1 handoff names, drawn from a model's diagnostic tables."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: workers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

PLOTS = ("layer_wise_attention.png", "modality_contribution.png", "attention_entropy.png")


def _layer_stats(per_layer: pd.DataFrame, column: str) -> pd.DataFrame:
    g = per_layer.groupby("layer_index")[column]
    stats = pd.DataFrame({"mean": g.mean(), "se": g.sem()})
    return stats.dropna(subset=["mean"])


def plot_layer_wise_attention(per_layer: pd.DataFrame, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    stats = _layer_stats(per_layer, "attn_visual_share") if len(per_layer) else pd.DataFrame()
    if len(stats):
        ax.errorbar(stats.index, stats["mean"], yerr=1.96 * stats["se"].fillna(0), marker="o", capsize=3)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    else:
        ax.text(0.5, 0.5, "no cross-modal attention in this architecture", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="layer", ylabel="attention mass on image tokens", ylim=(0, 1), title=f"{title}: layer-wise attention (mean ± 95% CI)")
    return _save(fig, path)


def plot_modality_contribution(per_sample: pd.DataFrame, threshold: float, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(per_sample["modality_shapley_v"].dropna(), bins=20, range=(0, 1), color="tab:blue", alpha=0.8)
    for x in (1 - threshold, threshold):
        ax.axvline(x, color="tab:red", ls="--", lw=1)
    ax.set(xlabel="image share of the two-player Shapley value", ylabel="samples", title=f"{title}: modality contribution")
    return _save(fig, path)


def plot_attention_entropy(per_layer: pd.DataFrame, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for column, label in (("entropy_visual", "image-token rows"), ("entropy_text", "text-token rows")):
        stats = _layer_stats(per_layer, column) if len(per_layer) else pd.DataFrame()
        if len(stats):
            ax.plot(stats.index, stats["mean"], marker="o", label=label)
    ax.set(xlabel="layer", ylabel="normalised attention entropy", ylim=(0, 1.05), title=f"{title}: attention entropy")
    if ax.lines:
        ax.legend()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(per_sample: pd.DataFrame, per_layer: pd.DataFrame, threshold: float, title: str, folder: Path) -> list[Path]:
    return [
        plot_layer_wise_attention(per_layer, title, folder / PLOTS[0]),
        plot_modality_contribution(per_sample, threshold, title, folder / PLOTS[1]),
        plot_attention_entropy(per_layer, title, folder / PLOTS[2]),
    ]
