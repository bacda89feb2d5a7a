"""The Week-1 handoff's three plots plus the layer profile, drawn from a model's diagnostic tables."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: workers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tasks.diagnostics.layers import SHARE_METRICS, layer_profile  # noqa: E402
from tasks.runtime.paths import cache_dir  # noqa: E402

PLOTS_VERSION = "1"  # bump when a plot's drawing changes: drawn plots are reused by the digest of their inputs
PLOTS = ("layer_wise_attention.png", "modality_contribution.png", "attention_entropy.png", "layer_profile.png")
MAPS_PLOT = "attention_maps.png"
_LABELS = {"attn_visual_share": "attention share", "rollout_visual_share": "rollout share",
           "mcs_entropy": "entropy MCS"}


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


def plot_layer_profile(per_layer: pd.DataFrame, title: str, path: Path) -> Path:
    """Per-layer mean image share of every attention share metric, with its 95 % CI as a band."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    profile = layer_profile(per_layer, tuple(m for m in SHARE_METRICS if m in per_layer and per_layer[m].notna().any()))
    for metric, rows in profile.groupby("metric", sort=False):
        line, = ax.plot(rows["layer_index"], rows["mean"], marker="o", label=_LABELS.get(metric, metric))
        ax.fill_between(rows["layer_index"], rows["ci_low"], rows["ci_high"], color=line.get_color(), alpha=0.2)
    if ax.lines:
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no cross-modal attention in this architecture", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="layer", ylabel="image share", ylim=(0, 1), title=f"{title}: layer profile (mean, 95% CI band)")
    return _save(fig, path)


def _token_axis(ax, spans: tuple[int, int, int, int] | None, n_rows: int, n_cols: int) -> None:
    """Label the image and text token blocks and draw their boundary; without spans, plain positions."""
    if spans is None:
        ax.set_xlabel("key position", fontsize=6)
        ax.set_ylabel("query position", fontsize=6)
        ax.tick_params(labelsize=5)
        return
    i0, i1, t0, t1 = spans
    ticks, labels = [], []
    for (a, b), name in (((i0, i1), "image"), ((t0, t1), "text")):
        if b > a:
            ticks.append((a + b - 1) / 2)
            labels.append(name)
    for axis_ticks, limit in ((ax.set_xticks, n_cols), (ax.set_yticks, n_rows)):
        axis_ticks([t for t in ticks if t < limit], [lbl for t, lbl in zip(ticks, labels) if t < limit], fontsize=6)
    for edge in {i0, i1, t0, t1} - {0}:  # block boundaries
        if edge < n_cols:
            ax.axvline(edge - 0.5, color="white", lw=0.8)
        if edge < n_rows:
            ax.axhline(edge - 0.5, color="white", lw=0.8)
    ax.set_xlabel("key tokens", fontsize=6)
    ax.set_ylabel("query tokens", fontsize=6)


def plot_attention_maps(maps: dict[str, dict[str, np.ndarray]], title: str, path: Path,
                        spans: tuple[int, int, int, int] | None = None) -> Path:
    """Head-mean attention maps of the few samples kept by ``diagnose(keep_maps=...)``: samples × layers.

    One colour scale for all panels (with its colour bar), token blocks labelled image / text, and white lines
    at the image/text boundary (``spans``: image start, stop, text start, stop, as the adapter reports them).
    """
    samples = list(maps)
    layers = list(maps[samples[0]]) if samples else []
    fig, axes = plt.subplots(max(len(samples), 1), max(len(layers), 1), squeeze=False,
                             figsize=(2.8 * max(len(layers), 1) + 1.4, 2.6 * max(len(samples), 1) + 0.6),
                             gridspec_kw={"wspace": 0.35, "hspace": 0.45})
    top = max((float(np.nanmax(m)) for per in maps.values() for m in per.values() if m.size), default=1.0)
    image = None
    for r, sample in enumerate(samples):
        for c, layer in enumerate(layers):
            m = maps[sample][layer]
            image = axes[r][c].imshow(m, cmap="viridis", vmin=0, vmax=top, interpolation="nearest")
            axes[r][c].set_title(f"{sample} · {layer}", fontsize=7)
            _token_axis(axes[r][c], spans, *m.shape[-2:])
            if c:  # one query label per row of panels: it would run into the panel on its left
                axes[r][c].set_ylabel("")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight (head mean)")
    fig.suptitle(f"{title}: attention maps (query rows × key columns)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)  # no tight_layout: it cannot place a colour bar shared by all panels
    plt.close(fig)
    return path


def _save(fig, path: Path) -> Path:
    for ax in fig.axes:  # layers are whole numbers
        if ax.get_xlabel() == "layer":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(per_sample: pd.DataFrame, per_layer: pd.DataFrame, threshold: float, title: str, folder: Path,
             maps: dict[str, dict[str, np.ndarray]] | None = None,
             spans: tuple[int, int, int, int] | None = None) -> list[Path]:
    """Every plot; ``maps`` (``DiagnosticResult.attention_maps``) adds the attention-map grid.

    Plots drawn before from the same tables are copied from the cache instead (a warm cycle re-attaches
    cached diagnostics, and drawing was most of that work)."""
    names = [*PLOTS, *([MAPS_PLOT] if maps else [])]
    stored = cache_dir("plots", _digest(per_sample, per_layer, threshold, title, maps, spans))
    if all((stored / n).is_file() for n in names):
        folder.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copyfile(stored / n, folder / n)) for n in names]
    drawn = [
        plot_layer_wise_attention(per_layer, title, folder / PLOTS[0]),
        plot_modality_contribution(per_sample, threshold, title, folder / PLOTS[1]),
        plot_attention_entropy(per_layer, title, folder / PLOTS[2]),
        plot_layer_profile(per_layer, title, folder / PLOTS[3]),
    ]
    if maps:
        drawn.append(plot_attention_maps(maps, title, folder / MAPS_PLOT, spans))
    for path in drawn:  # written whole, then renamed: a parallel worker never copies half a file
        partial = stored / f".{path.name}.{os.getpid()}"
        shutil.copyfile(path, partial)
        os.replace(partial, stored / path.name)
    return drawn


def _digest(per_sample: pd.DataFrame, per_layer: pd.DataFrame, threshold: float, title: str,
            maps: dict[str, dict[str, np.ndarray]] | None, spans) -> str:
    h = hashlib.sha256(repr((PLOTS_VERSION, matplotlib.__version__, float(threshold), title, spans)).encode())
    for frame in (per_sample, per_layer):
        h.update(repr(list(frame.columns)).encode())
        h.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    for sample, layers in sorted((maps or {}).items()):
        for name, array in sorted(layers.items()):
            h.update(repr((sample, name, array.shape, str(array.dtype))).encode())
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:32]
