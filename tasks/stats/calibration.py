"""Calibration of the metrics on the zoo: which metric finds planted collapse, and which invents it.

Pure functions on DataFrames (no Prefect, no MLflow). The input is the
zoo's per-sample diagnostics stacked over models and training seeds: one row
per (variant, seed, sample_id) with a column per metric (``diagnose``'s
``per_sample`` plus ``variant`` and ``seed``).

For each metric and (variant, seed) the mean and its CI95 (``per_model.summarize``)
are called against the mission threshold t: **text** when the CI lies
entirely below 1 − t, **vision** when it lies entirely above t, else
**neither**. Over the seeds:

- sensitivity: fraction of (dominant model, seed) pairs called in the planted direction;
- specificity: fraction of (balanced model, seed) pairs called neither;
- separates: sensitivity 1 and specificity 1;
- points the wrong way: the text-dominant model's mean (over seeds) exceeds the vision-dominant one's.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from tasks.stats.per_model import summarize

# The per-sample columns that hold an image share (mcs_entropy: the source documents' MCS, H_v / (H_v + H_t)).
METRICS = ("modality_shapley_v", "ablation_visual_share", "mm_shap_v", "attn_visual_share", "mcs_entropy",
           "rollout_visual_share", "relevance_visual_share")
# What each zoo variant must be called: its planted behaviour.
EXPECTED = {"text_dominant": "text", "balanced": "neither", "vision_dominant": "vision"}
CALLS = ("text", "neither", "vision")
DEFAULT_THRESHOLD = 0.80


def call_from_ci(ci_low: float, ci_high: float, threshold: float = DEFAULT_THRESHOLD) -> str:
    """"text" if the CI lies entirely below 1 − threshold, "vision" if entirely above threshold, else "neither".

    A NaN bound (too few values) calls nothing: an untestable model is never flagged.
    """
    if not 0.5 < threshold < 1:
        raise ValueError(f"threshold {threshold}: the imbalance threshold lies in (0.5, 1), e.g. 0.80")
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return "neither"
    if ci_high < 1 - threshold:
        return "text"
    if ci_low > threshold:
        return "vision"
    return "neither"


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: the frame lacks column(s) {missing}; it has {list(frame.columns)}")


def metric_calls(per_sample: pd.DataFrame, metrics: Sequence[str] = METRICS, threshold: float = DEFAULT_THRESHOLD,
                 n_resamples: int = 9999, seed: int = 0) -> pd.DataFrame:
    """One row per (metric, variant, seed): n, mean, ci_low, ci_high, ci_method, call, expected, correct.

    Metrics absent from the frame or all-NaN for a model get n = 0 and call "neither".
    """
    _require(per_sample, ("variant", "seed"), "metric_calls")
    rows = []
    for (variant, train_seed), group in per_sample.groupby(["variant", "seed"], sort=True):
        for metric in metrics:
            values = group[metric].to_numpy(dtype=float) if metric in group else np.array([])
            s = summarize(values, baseline=0.5, n_resamples=n_resamples, seed=seed)
            call = call_from_ci(s.ci_low, s.ci_high, threshold)
            expected = EXPECTED.get(variant, "")
            rows.append({"metric": metric, "variant": variant, "seed": int(train_seed), "n": s.n, "mean": s.mean,
                         "ci_low": s.ci_low, "ci_high": s.ci_high, "ci_method": s.ci_method, "call": call,
                         "expected": expected, "correct": call == expected})
    return pd.DataFrame(rows)


def metric_scores(calls: pd.DataFrame) -> pd.DataFrame:
    """Per metric over the seeds: sensitivity, specificity, separates, wrong_way and the variant means.

    ``calls`` is ``metric_calls``'s frame. ``wrong_way_seeds`` counts the seeds
    where the text-dominant mean exceeds the vision-dominant one;
    ``balanced_between`` is the fraction of seeds where the balanced mean lies
    strictly between the two. A metric with no dominant (or no balanced) pair
    gets NaN sensitivity (specificity) and never separates.
    """
    _require(calls, ("metric", "variant", "seed", "mean", "call", "expected"), "metric_scores")
    rows = []
    for metric, group in calls.groupby("metric", sort=False):
        dominant = group[group["expected"].isin(["text", "vision"])]
        balanced = group[group["expected"] == "neither"]
        sensitivity = float((dominant["call"] == dominant["expected"]).mean()) if len(dominant) else math.nan
        specificity = float((balanced["call"] == "neither").mean()) if len(balanced) else math.nan
        means = group.pivot_table(index="seed", columns="variant", values="mean", aggfunc="mean")
        text = means.get("text_dominant", pd.Series(dtype=float))
        vision = means.get("vision_dominant", pd.Series(dtype=float))
        bal = means.get("balanced", pd.Series(dtype=float))
        wrong = (text > vision).reindex(means.index, fill_value=False)
        between = ((text < bal) & (bal < vision)).reindex(means.index, fill_value=False)
        text_mean, vision_mean = float(text.mean()), float(vision.mean())
        rows.append({
            "metric": metric,
            "sensitivity": sensitivity,
            "specificity": specificity,
            "separates": bool(sensitivity == 1 and specificity == 1),
            "wrong_way": bool(text_mean > vision_mean),
            "wrong_way_seeds": int(wrong.sum()),
            "balanced_between": float(between.mean()) if len(between) else math.nan,
            "n_seeds": int(group["seed"].nunique()),
            "text_dominant_mean": text_mean,
            "balanced_mean": float(bal.mean()),
            "vision_dominant_mean": vision_mean,
        })
    return pd.DataFrame(rows)


def agreement(per_sample: pd.DataFrame, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Spearman rank correlation of every metric pair across samples, per variant (all seeds) and pooled.

    Columns scope ("pooled" or the variant), metric_a, metric_b, rho, p, n.
    Rows with a NaN in either metric are dropped; a constant metric gives NaN rho.
    """
    _require(per_sample, ("variant",), "agreement")
    present = [m for m in metrics if m in per_sample.columns]
    scopes = [("pooled", per_sample)] + [(v, g) for v, g in per_sample.groupby("variant", sort=True)]
    rows = []
    for scope, frame in scopes:
        for i, a in enumerate(present):
            for b in present[i + 1:]:
                pair = frame[[a, b]].dropna()
                rho = p = math.nan
                if len(pair) >= 3 and pair[a].nunique() > 1 and pair[b].nunique() > 1:
                    res = scipy_stats.spearmanr(pair[a], pair[b])
                    rho, p = float(res.statistic), float(res.pvalue)
                rows.append({"scope": scope, "metric_a": a, "metric_b": b, "rho": rho, "p": p, "n": len(pair)})
    return pd.DataFrame(rows)


def mc_error(runs: pd.DataFrame) -> pd.DataFrame:
    """MM-SHAP's Monte-Carlo error against the number of permutations.

    ``runs``: one row per (variant, permutations, repeat, sample_id) with
    mm_shap_v and mm_shap_se (``repeat`` = the sampling seed). Per (variant,
    permutations): ``mean_se`` (the mean reported standard error), ``spread``
    (the SD of V-SHAP across repeats, averaged over samples: the error actually
    seen) and their ratio; NaN SEs (a single antithetic pair has none) stay out
    of the mean.
    """
    _require(runs, ("variant", "permutations", "repeat", "sample_id", "mm_shap_v", "mm_shap_se"), "mc_error")
    rows = []
    for (variant, perms), group in runs.groupby(["variant", "permutations"], sort=True):
        spread = group.groupby("sample_id")["mm_shap_v"].std(ddof=1)
        mean_se = float(group["mm_shap_se"].mean())  # pandas skips NaN
        mean_spread = float(spread.mean())
        rows.append({"variant": variant, "permutations": int(perms), "mean_se": mean_se, "spread": mean_spread,
                     "se_to_spread": mean_se / mean_spread if mean_spread > 0 else math.nan,
                     "mean_v": float(group["mm_shap_v"].mean()),
                     "n_samples": int(group["sample_id"].nunique()), "n_repeats": int(group["repeat"].nunique())})
    return pd.DataFrame(rows)


def credit_concentration(phi_image: np.ndarray, phi_text: np.ndarray) -> dict[str, float]:
    """How one sample's MM-SHAP credit spreads over its players.

    ``top_text_share``/``top_image_share``: the largest |φ| of the modality ÷
    its Σ|φ| (1 = one player holds it all, 1/k = spread evenly over k);
    ``image_share``: V-SHAP itself. Shows whether a low V-SHAP comes from
    credit split among image players while one word stays pivotal.
    """
    a_img, a_txt = np.abs(np.asarray(phi_image, float)), np.abs(np.asarray(phi_text, float))
    s_img, s_txt = a_img.sum(), a_txt.sum()
    return {
        "top_image_share": float(a_img.max() / s_img) if s_img > 0 else math.nan,
        "top_text_share": float(a_txt.max() / s_txt) if s_txt > 0 else math.nan,
        "image_players": float(a_img.size),
        "text_players": float(a_txt.size),
        "image_share": float(s_img / (s_img + s_txt)) if s_img + s_txt > 0 else math.nan,
    }


# ------------------------------------------------------------------ plots


def calls_figure(calls: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> Figure:
    """One panel per metric: mean and CI95 per (variant, seed), with the collapse thresholds."""
    _require(calls, ("metric", "variant", "seed", "mean", "ci_low", "ci_high"), "calls_figure")
    metrics = list(dict.fromkeys(calls["metric"]))
    variants = [v for v in EXPECTED if v in set(calls["variant"])]
    colours = {"text_dominant": "tab:blue", "balanced": "tab:green", "vision_dominant": "tab:red"}
    fig = Figure(figsize=(10, 1.2 + 2.2 * math.ceil(len(metrics) / 2)))
    FigureCanvasAgg(fig)
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(math.ceil(len(metrics) / 2), 2, k + 1)
        rows = calls[calls["metric"] == metric].sort_values(["variant", "seed"])
        labels = []
        y = 0
        for variant in variants:
            for r in rows[rows["variant"] == variant].itertuples():
                if math.isfinite(r.ci_low) and math.isfinite(r.ci_high):
                    ax.plot([r.ci_low, r.ci_high], [y, y], color=colours[variant], lw=2)
                if math.isfinite(r.mean):
                    ax.plot([r.mean], [y], "o", color=colours[variant], ms=4)
                labels.append(f"{variant} s{r.seed}")
                y += 1
        for x in (1 - threshold, threshold):
            ax.axvline(x, color="grey", ls="--", lw=0.8)
        ax.set_xlim(-0.02, 1.02)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_title(metric, fontsize=9)
    fig.supxlabel("image share: mean and CI95 per model and training seed")
    fig.tight_layout()
    return fig


def mc_error_figure(errors: pd.DataFrame) -> Figure:
    """Reported SE (solid) and the spread across repeats (dashed) against permutations, per variant (log-log)."""
    _require(errors, ("variant", "permutations", "mean_se", "spread"), "mc_error_figure")
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for variant, group in errors.groupby("variant", sort=True):
        group = group.sort_values("permutations")
        line, = ax.plot(group["permutations"], group["mean_se"], "o-", label=f"{variant}: reported SE")
        ax.plot(group["permutations"], group["spread"], "s--", color=line.get_color(), label=f"{variant}: SD over repeats")
    ax.set_xscale("log", base=2)
    ticks = sorted(errors["permutations"].unique())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_yscale("log")
    ax.set_xlabel("permutations per sample")
    ax.set_ylabel("Monte-Carlo error of V-SHAP")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
