"""Speed of the statistical framework: ``analyze`` vs a naive per-resample loop, same run.

Run: uv run python benchmarks/stats_speed.py [--models 5] [--samples 500] [--resamples 9999]

Workload: M models x N samples of one metric; ``analyze`` computes every
per-model summary (BCa bootstrap CI with B resamples, t-test, Wilcoxon, d and
its CI, power, TOST) and every pairwise comparison (paired t, Wilcoxon, BCa
bootstrap CI of the mean difference, B sign-flip permutations), Holm across
the pairs. The naive baseline runs the same statistics but draws each
bootstrap resample and each sign flip in a Python loop, one statistic per
iteration (BCa from those resamples by the textbook formulas), over all
models and pairs. Target: analyze 5 x 500 <= 2 s (best of the repeats, wall).
"""
from __future__ import annotations

import argparse
import itertools
import os
import time

import numpy as np
import pandas as pd
from scipy import stats as sps

from tasks.stats import inference, per_model
from tasks.stats.analysis import analyze


def make_table(models: int, samples: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    shapes = [(2, 20), (20, 2), (10, 10), (11, 10), (30, 3), (5, 5), (3, 9), (9, 3)]
    rows = []
    for k in range(models):
        a, b = shapes[k % len(shapes)]
        rows += [(f"model-{k}", f"s{i}", "share", float(v)) for i, v in enumerate(rng.beta(a, b, samples))]
    return pd.DataFrame(rows, columns=["model", "sample_id", "metric", "value"])


def naive_bca(x: np.ndarray, resamples: int, rng: np.random.Generator, confidence: float = 0.95) -> tuple[float, float]:
    """BCa CI of the mean, one resample per Python iteration (Efron & Tibshirani 1993, 14.3)."""
    n = x.size
    theta = x.mean()
    boot = np.empty(resamples)
    for b in range(resamples):
        boot[b] = x[rng.integers(0, n, n)].mean()
    jack = np.empty(n)
    for i in range(n):
        jack[i] = np.delete(x, i).mean()
    z0 = sps.norm.ppf((boot < theta).mean())
    dev = jack.mean() - jack
    a = (dev**3).sum() / (6 * (dev**2).sum() ** 1.5)
    z = sps.norm.ppf([(1 - confidence) / 2, (1 + confidence) / 2])
    levels = sps.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    lo, hi = np.quantile(boot, levels)
    return float(lo), float(hi)


def naive_signflip(d: np.ndarray, resamples: int, rng: np.random.Generator) -> float:
    observed = d.mean()
    less = greater = 0
    for _ in range(resamples):
        m = (d * rng.choice((-1.0, 1.0), d.size)).mean()
        less += m <= observed
        greater += m >= observed
    return min(1.0, 2 * min(less + 1, greater + 1) / (resamples + 1))


def naive_analyze(table: pd.DataFrame, resamples: int) -> dict:
    rng = np.random.default_rng(0)
    vectors = {m: g["value"].to_numpy() for m, g in table.groupby("model", sort=False)}
    out = {}
    for m, x in vectors.items():
        out[m] = (naive_bca(x, resamples, rng), sps.ttest_1samp(x, 0.5).pvalue, sps.wilcoxon(x - 0.5).pvalue,
                  inference.ttest_power((x.mean() - 0.5) / x.std(ddof=1), x.size), per_model.tost(x))
    for a, b in itertools.combinations(vectors, 2):
        d = vectors[a] - vectors[b]
        out[(a, b)] = (naive_bca(d, resamples, rng), sps.ttest_rel(vectors[a], vectors[b]).pvalue,
                       sps.wilcoxon(d).pvalue, naive_signflip(d, resamples, rng))
    return out


TARGET_S = 2.0


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--resamples", type=int, default=9999)
    parser.add_argument("--repeats", type=int, default=3, help="vectorised runs; the best is reported")
    parser.add_argument("--quick", action="store_true", help="no naive baseline (it takes minutes)")
    args = parser.parse_args(argv)
    table = make_table(args.models, args.samples)
    pairs = args.models * (args.models - 1) // 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    analyze(table.head(40), n_resamples=99)  # warm imports and scipy's first-call setup
    # Wall seconds, and CPU seconds of this process (less sensitive to other
    # load on a shared machine).
    times, cpu = [], []
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = analyze(table, n_resamples=args.resamples, seed=0)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    fast, fast_cpu = min(times), min(cpu)

    figures = {"analyze_s": fast, "analyze_cpu_s": fast_cpu}
    print(f"vectorised analyze, {args.models} models x {args.samples} samples: {fast:.2f} s "
          f"(best of {args.repeats}: {', '.join(f'{t:.2f}' for t in times)}) "
          f"(target <= {TARGET_S} s: {'met' if fast <= TARGET_S else 'MISSED'}); CPU {fast_cpu:.2f} s")
    if args.quick:
        return figures
    start, start_cpu = time.perf_counter(), time.process_time()
    naive = naive_analyze(table, args.resamples)
    slow, slow_cpu = time.perf_counter() - start, time.process_time() - start_cpu

    first = result.per_model[0]
    lo, hi = naive[first.model][0]
    print(f"workload: {args.models} models x {args.samples} samples, {args.resamples} resamples, "
          f"{pairs} pairwise comparisons; {cores} CPU core(s) available")
    print(f"naive loop baseline: {slow:.2f} s; CPU {slow_cpu:.2f} s")
    print(f"speed-up: {slow / fast:.1f}x wall, {slow_cpu / fast_cpu:.1f}x CPU")
    print(f"check, {first.model} CI95: analyze [{first.summary.ci_low:.4f}, {first.summary.ci_high:.4f}] "
          f"vs naive [{lo:.4f}, {hi:.4f}] (differ by Monte-Carlo error only)")
    return figures | {"naive_s": slow, "speedup": slow / fast}


if __name__ == "__main__":
    main()
