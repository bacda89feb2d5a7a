"""Does a diagnostic's memory stay flat in the number of samples? ``diagnose`` over 100 vs 1,000.

Run: .venv/bin/python benchmarks/diagnostic_memory.py [--quick]

Model: a calibration-zoo model (trained once, ~10 s, and cached under
FUSIONAUDIT_HOME before the measurements start). Each (sample count, repeat)
runs in a fresh process: load the model, generate the synthetic samples,
run ``diagnose`` once on one batch of other samples (the first call's
one-time allocations would otherwise dilute the comparison), then measure
the peak RSS of ``diagnose`` over all samples above the RSS just before it.
The samples are the caller's input and exist before the baseline; their own
RSS is printed separately. Target: peak(1,000) <= 1.2 x peak(100).

Also shown: the RSS left once ``diagnose`` returned (its result alive), what the batches left behind; the
peak adds the largest batch's transient allocations, which vary from batch to batch with the allocator's
placement. RSS also counts memory the allocator keeps after ``free``: on glibc, rerun
with MALLOC_MMAP_THRESHOLD_=131072 (the children inherit it) to see how much
of a growth is heap fragmentation rather than data that ``diagnose`` keeps.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks._measure import MiB, add_open_clip_args, forward_args, median, peak_rss_of, positive_finite, \
    random_openclip, register_open_clip_arch, report_to_parent, rss_bytes, run_child, verdict
from tasks.adapters.contract import ModelSpec
from tasks.adapters.zoo.calibration import VARIANTS, ZooAdapter, load_zoo_model
from tasks.data.synthetic import make_synthetic
from tasks.diagnostics.run import diagnose

TARGET = 1.2


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 vs 160 samples, one repeat")
    parser.add_argument("--zoo", default="balanced", choices=VARIANTS, help="the calibration-zoo model to diagnose")
    add_open_clip_args(parser, None, "an open_clip model name, random init, instead of a zoo model")
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32, help="diagnose's batch size")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per sample count")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # sample count measured in this process
    args = parser.parse_args(argv)
    if args.quick:
        args.small, args.large, args.repeats = min(args.small, 32), min(args.large, 160), 1
    if args.small >= args.large:
        parser.error(f"--small {args.small} must be below --large {args.large}")
    return args


def _model_label(args) -> str:
    return f"open_clip {args.arch} (random init)" if args.arch else f"zoo {args.zoo}"


def _load(args):
    if args.arch:
        return random_openclip(register_open_clip_arch(args.arch, args.model_config))
    return ZooAdapter().load(ModelSpec(name=f"zoo-{args.zoo}", adapter="zoo", source=args.zoo))


def child(args) -> None:
    torch.set_num_threads(args.threads)  # a fresh process of its own: nothing to restore
    model = _load(args)
    loaded = rss_bytes()
    samples = make_synthetic(args.child, seed=0)
    data = rss_bytes() - loaded
    diagnose(model, make_synthetic(args.batch_size, seed=1), batch_size=args.batch_size)  # warm-up
    start = time.perf_counter()
    baseline, peak, result = peak_rss_of(lambda: diagnose(model, samples, batch_size=args.batch_size))
    seconds = time.perf_counter() - start
    kept = rss_bytes() - baseline  # resident once it returned, its result alive: what the batches left behind
    if len(result.per_sample) != args.child:
        raise AssertionError(f"diagnose returned {len(result.per_sample)} rows for {args.child} samples")
    report_to_parent({"baseline_bytes": baseline, "peak_bytes": peak, "kept_bytes": kept, "data_bytes": data,
                      "seconds": seconds})


def _child_args(args, n: int) -> list[str]:
    return [*forward_args(args, "zoo", "batch_size", "threads", "small", "large", "arch", "model_config"), "--child", str(n)]


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse(argv)
    if args.child:
        child(args)
        return {}
    if not args.arch:
        load_zoo_model(args.zoo)  # trains and caches it once, so no child measures training
    runs: dict[int, list[dict]] = {args.small: [], args.large: []}
    for _ in range(args.repeats):  # interleaved, so drift on the machine hits both sizes alike
        for n in runs:
            runs[n].append(run_child(Path(__file__), _child_args(args, n)))

    def med(n: int, key) -> float:
        return median([key(r) for r in runs[n]])

    above = {n: med(n, lambda r: (r["peak_bytes"] - r["baseline_bytes"]) / MiB) for n in runs}
    figures = positive_finite({
        "small_peak_above_mib": above[args.small], "large_peak_above_mib": above[args.large],
        "ratio": above[args.large] / above[args.small],
        "small_seconds": med(args.small, lambda r: r["seconds"]),
        "large_seconds": med(args.large, lambda r: r["seconds"]),
    })
    growth_kib = (above[args.large] - above[args.small]) * 1024 / (args.large - args.small)
    print(f"diagnose on {_model_label(args)}, batch size {args.batch_size}, "
          f"median of {args.repeats} fresh process(es) per size")
    for n, label in ((args.small, "small"), (args.large, "large")):
        data = med(n, lambda r: r["data_bytes"] / MiB)
        print(f"  {n:6d} samples: peak RSS above baseline {above[n]:7.2f} MiB, "
              f"{figures[label + '_seconds']:6.1f} s  (the samples themselves: {data:.2f} MiB)")
    print(f"  {args.large} / {args.small}: {figures['ratio']:.3f}  (target <= {TARGET}: "
          f"{verdict(figures['ratio'] <= TARGET)}); growth {growth_kib:.2f} KiB per extra sample")
    # Shown, not a target: the peak is the largest batch's transient allocations on top of what earlier batches
    # left resident, and the former varies from batch to batch with glibc's placement (a max over 10x more batches).
    kept = {n: med(n, lambda r: r["kept_bytes"] / MiB) for n in runs}
    print(f"  resident after the call (result alive): {kept[args.small]:.2f} MiB at {args.small}, "
          f"{kept[args.large]:.2f} MiB at {args.large}: "
          f"{(kept[args.large] - kept[args.small]) * 1024 / (args.large - args.small):.2f} KiB per extra sample")
    return figures


if __name__ == "__main__":
    main()
