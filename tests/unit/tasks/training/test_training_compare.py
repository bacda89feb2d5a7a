"""Paired comparison on planted per-sample tables: an identical variant is rolled back, a shifted one adopted."""
import numpy as np
import pandas as pd

from tasks.training.compare import compare_variants


def _frame(rng) -> pd.DataFrame:
    rows = []
    for seed in (0, 1, 2):
        base = rng.uniform(0.0, 0.1, 40)
        correct = (rng.uniform(size=40) < 0.9).astype(float)
        for config, share, acc in (("baseline", base, correct), ("noop", base, correct),
                                   ("works", base + 0.4 + rng.normal(0, 0.02, 40), np.maximum(correct, 1.0))):
            rows.append(pd.DataFrame({"config": config, "seed": seed, "sample_id": [f"s{i}" for i in range(40)],
                                      "modality_shapley_v": share, "correct": acc}))
    return pd.concat(rows, ignore_index=True)


def test_identical_variant_rolls_back_and_a_real_rise_is_adopted():
    out = compare_variants(_frame(np.random.default_rng(0)), "baseline", ["noop", "works"], "modality_shapley_v",
                           min_visual_share=0.10, max_accuracy_drop=0.01, alpha=0.05, n_resamples=999)
    assert out["noop"].decision == "ROLLBACK" and out["noop"].share.mean_diff == 0 and out["noop"].p_holm == 1
    assert out["works"].decision == "ADOPT" and out["works"].share.n == 120
    assert out["works"].p_holm < 0.05 and set(out["works"].per_seed) == {0, 1, 2}
