"""Each variant against the baseline: paired on (seed, held-out sample), Holm across variants, then decided.

Variant seed s is compared with baseline seed s on the same held-out samples
(the pairs of all seeds pooled); the share's paired p-value is the sign-flip
permutation p of ``tasks.stats.paired_comparison`` (valid when every
difference is zero, as for a variant that trains the identical model), and
those p-values are Holm-corrected across the variants.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from tasks.stats import comparisons
from tasks.training.decide import Criteria, criteria, decide


@dataclass(frozen=True)
class VariantComparison:
    variant: str
    share: comparisons.PairedComparison       # variant − baseline, gate metric
    accuracy: comparisons.PairedComparison    # variant − baseline, per-sample correctness (0/1)
    p_holm: float
    criteria: Criteria
    decision: str
    per_seed: dict[int, tuple[float, float]]  # seed → (share difference, accuracy difference)


def paired(per_sample: pd.DataFrame, baseline: str, variant: str, column: str) -> tuple[pd.Series, pd.Series, pd.DataFrame]:
    """Variant and baseline values of ``column`` matched on (seed, sample_id); also the merged frame."""
    keys = ["seed", "sample_id"]
    a = per_sample[per_sample["config"] == variant][keys + [column]]
    b = per_sample[per_sample["config"] == baseline][keys + [column]]
    merged = a.merge(b, on=keys, suffixes=("_variant", "_baseline"))
    return merged[f"{column}_variant"], merged[f"{column}_baseline"], merged


def compare_variants(per_sample: pd.DataFrame, baseline: str, variants: list[str], metric: str, min_visual_share: float,
                     max_accuracy_drop: float, alpha: float, n_resamples: int = 9999) -> dict[str, VariantComparison]:
    """``per_sample``: columns config, seed, sample_id, ``metric``, correct (one row per model and held-out sample)."""
    share = {}
    accuracy = {}
    per_seed = {}
    for v in variants:
        a, b, merged = paired(per_sample, baseline, v, metric)
        share[v] = comparisons.paired_comparison(a.to_numpy(), b.to_numpy(), n_resamples=n_resamples, seed=0, confidence=1 - alpha)
        ca, cb, cmerged = paired(per_sample, baseline, v, "correct")
        accuracy[v] = comparisons.paired_comparison(ca.to_numpy(), cb.to_numpy(), n_resamples=n_resamples, seed=0,
                                              confidence=1 - alpha)
        merged = merged.assign(acc_diff=cmerged["correct_variant"] - cmerged["correct_baseline"],
                               share_diff=merged[f"{metric}_variant"] - merged[f"{metric}_baseline"])
        per_seed[v] = {int(s): (float(g["share_diff"].mean()), float(g["acc_diff"].mean())) for s, g in merged.groupby("seed")}
    family = comparisons.holm({v: share[v].perm_p for v in variants}, alpha=alpha)
    p_holm = dict(zip(family.names, family.adjusted))
    out = {}
    for v in variants:
        c = criteria(share[v].mean_diff, p_holm[v], share[v].mean_a, accuracy[v].ci_low, accuracy[v].ci_high,
                     min_visual_share, max_accuracy_drop, alpha)
        out[v] = VariantComparison(v, share[v], accuracy[v], p_holm[v], c, decide(c), per_seed[v])
    return out
