"""Does probing extraction's memory stay flat in the number of samples? ``extract`` over 100 vs 1,000 images.

Run: .venv/bin/python benchmarks/probing_extraction_memory.py [--quick]

Each (sample count, repeat) runs in a fresh process: open the model (the
spatial zoo's position-keeping model, or a tiny random-init LLaVA with
``--llava``), draw the screening images, extract once on a few other images
(one-time allocations), then measure the peak RSS of ``extract`` over all the
images above the RSS just before it. The images are the caller's input and
exist before the baseline. Features go to a memmap on disk batch by batch, so
the target is peak(1,000) <= 1.2 x peak(100).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._measure import MiB, median, peak_rss_of, positive_finite, report_to_parent, run_child
from tasks.adapters.contract import ModelSpec
from tasks.adapters.registry import get_adapter
from tasks.probing.extract import extract
from tasks.probing.ground_truth import screening_set

TARGET = 1.2
KEYS = ("vision", "projector", "lm.0", "lm.1")
LLAVA = (("text_config.hidden_size", 64), ("text_config.intermediate_size", 128), ("text_config.num_hidden_layers", 2),
         ("text_config.num_attention_heads", 4), ("text_config.num_key_value_heads", 2), ("text_config.vocab_size", 256),
         ("vision_config.hidden_size", 32), ("vision_config.intermediate_size", 64), ("vision_config.num_hidden_layers", 2),
         ("vision_config.num_attention_heads", 4), ("vision_config.image_size", 32), ("vision_config.patch_size", 8))


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 32 vs 160 images, one repeat")
    p.add_argument("--llava", action="store_true", help="a tiny random-init LLaVA (hooked extraction) instead of the zoo")
    p.add_argument("--small", type=int, default=100)
    p.add_argument("--large", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.small, args.large, args.repeats = 32, 160, 1
    return args


def _model(args):
    if args.llava:
        return get_adapter("llava").load(ModelSpec("tiny-llava", "llava", "", allow_random_init=True,
                                                   random_init_config=LLAVA)), "llava"
    return get_adapter("zoo-spatial").load(ModelSpec("zoo-spatial-keeps", "zoo-spatial", "keeps")), "zoo-spatial"


def child(args) -> None:
    torch.set_num_threads(1)
    model, adapter = _model(args)
    data = screening_set(args.child, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        warm = screening_set(args.batch_size, seed=1)
        extract(model, adapter, "warm", warm.samples, KEYS, "tokens", 64, args.batch_size, warm.content_hash, Path(tmp))
        start = time.perf_counter()
        baseline, peak, features = peak_rss_of(lambda: extract(model, adapter, "bench", data.samples, KEYS, "tokens", 64,
                                                                args.batch_size, data.content_hash, Path(tmp)))
        if features.n != args.child or features.cached:
            raise AssertionError(f"extracted {features.n} rows for {args.child} images (cached: {features.cached})")
        report_to_parent({"baseline_bytes": baseline, "peak_bytes": peak, "seconds": time.perf_counter() - start})


def main(argv=None) -> dict[str, float]:
    args = parse(argv)
    if args.child:
        child(args)
        return {}
    passed = ["--batch-size", str(args.batch_size)] + (["--llava"] if args.llava else [])
    runs: dict[int, list[dict]] = {args.small: [], args.large: []}
    for _ in range(args.repeats):
        for n in runs:
            runs[n].append(run_child(Path(__file__), passed + ["--child", str(n)]))
    above = {n: median([(r["peak_bytes"] - r["baseline_bytes"]) / MiB for r in rs]) for n, rs in runs.items()}
    seconds = {n: median([r["seconds"] for r in rs]) for n, rs in runs.items()}
    figures = positive_finite({"small_peak_above_mib": above[args.small], "large_peak_above_mib": above[args.large],
                               "ratio": above[args.large] / above[args.small]})
    label = "tiny random-init LLaVA" if args.llava else "zoo-spatial keeps"
    print(f"probing extraction on {label}, points {', '.join(KEYS)}, batch {args.batch_size}, "
          f"median of {args.repeats} fresh process(es) per size")
    for n in runs:
        print(f"  {n:6d} images: peak RSS above baseline {above[n]:7.2f} MiB, {seconds[n]:6.1f} s")
    ok = figures["ratio"] <= TARGET
    print(f"  {args.large} / {args.small}: {figures['ratio']:.3f}  (target <= {TARGET}: {'met' if ok else 'NOT met'})")
    return figures


if __name__ == "__main__":
    main()
