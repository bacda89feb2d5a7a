"""Cost of a dual-encoder diagnosis against a plain forward of the same batch.

Run: .venv/bin/python benchmarks/diagnose_cost.py [--quick] [--batch 32] [--with-reference]

Model: open_clip ViT-B-32, random init, through the project's adapter; batch:
synthetic shapes. ``plain`` is ``prepare`` + ``score`` (both towers once).
``diagnose`` is tasks.diagnostics.run.diagnose on the same samples with
MM-SHAP off: the two-player Shapley values, the ablation share and the trace
(maps of the default two samples kept). ``--with-reference`` adds the route
diagnose took before it reused passes: four ``score`` passes on the masked
batches plus a traced forward. Interleaved repeats, median, CPU and wall
time. Target: diagnose / plain <= 2.0.
"""
from __future__ import annotations

import argparse

import torch

from benchmarks._measure import add_open_clip_args, interleaved_times, median, positive_finite, random_openclip, \
    register_open_clip_arch, torch_threads, verdict
from tasks.data.synthetic import make_synthetic
from tasks.diagnostics.run import diagnose

TARGET = 2.0


@torch.no_grad()
def reference_route(model, samples) -> None:
    """What diagnose did before reusing passes: a score per coalition and a separate traced forward."""
    inputs = model.prepare([s.image for s in samples], [s.caption for s in samples], [s.sample_id for s in samples])
    for image_keep, text_keep in ((True, True), (True, False), (False, True), (False, False)):
        model.score(model.mask(inputs, image_keep, text_keep) if not (image_keep and text_keep) else inputs)
    model.trace(inputs, keep_maps=2)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats, no reference route")
    add_open_clip_args(parser, "ViT-B-32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadiest on a shared machine)")
    parser.add_argument("--with-reference", action="store_true", help="also time the four-pass route")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.with_reference = min(args.repeats, 3), False
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse(argv)
    model = random_openclip(register_open_clip_arch(args.arch, args.model_config))
    samples = make_synthetic(args.batch, seed=0)

    def plain():
        model.score(model.prepare([s.image for s in samples], [s.caption for s in samples],
                                  [s.sample_id for s in samples]))

    variants = {"plain": plain,
                "diagnose": lambda: diagnose(model, samples, batch_size=args.batch, mm_shap_permutations=0)}
    if args.with_reference:
        variants["reference"] = lambda: reference_route(model, samples)
    with torch_threads(args.threads):
        times = interleaved_times(variants, repeats=args.repeats)
    figures: dict[str, float] = {}
    for clock in ("cpu", "wall"):
        base = median(times["plain"][clock])
        for name in variants:
            figures[f"{name}_{clock}_s"] = median(times[name][clock])
            if name != "plain":
                figures[f"{name}_over_plain_{clock}"] = figures[f"{name}_{clock}_s"] / base
    positive_finite(figures)
    print(f"{args.arch}, random init, batch {args.batch}, {args.threads} thread(s), "
          f"median of {args.repeats} interleaved repeats")
    print(f"{'':40}{'CPU time':>10}{'wall time':>11}")
    for name in variants:
        print(f"{name:40}{figures[name + '_cpu_s']:8.2f} s{figures[name + '_wall_s']:9.2f} s")
    for name in [n for n in variants if n != "plain"]:
        ratio = figures[f"{name}_over_plain_cpu"]
        line = f"{name} / plain (cpu): {ratio:.2f}  (wall {figures[f'{name}_over_plain_wall']:.2f})"
        print(line + (f"  target <= {TARGET}: {verdict(ratio <= TARGET)}" if name == "diagnose" else ""))
    return figures


if __name__ == "__main__":
    main()
