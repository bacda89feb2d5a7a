"""Cost of tracing attention: ``trace`` (hooks reduce each map) vs the plain forward, same batch.

Run: .venv/bin/python benchmarks/trace_overhead.py [--quick]

Model: open_clip ViT-B-32, random init, through the project's adapter;
batch: synthetic shapes at 224 px. ``plain`` is ``score`` (both towers, no
hooks), ``traced`` is ``trace`` (both towers; a kwargs pre-hook asks
nn.MultiheadAttention for per-head maps, a forward hook reduces them).
``weights only`` asks for the maps and drops them unreduced, which splits
the overhead into its two causes: the attention path that returns weights,
and the reduction. Target: traced / plain <= 1.05 at batch 8 and 32, on CPU time (a shared
machine's wall time also counts waits for a core; both are printed).
"""
from __future__ import annotations

import argparse

import torch

from benchmarks._measure import add_open_clip_args, interleaved_times, median, positive_finite, random_openclip, \
    register_open_clip_arch, torch_threads, verdict, want_attention_weights
from tasks.data.synthetic import make_synthetic

TARGET = 1.05


def _drop_weights(_module, _args, output):
    return output[0], None


@torch.no_grad()
def weights_only_forward(model, inputs) -> None:
    """Both towers with per-head attention maps requested and then dropped: trace without its reduction."""
    handles = []
    for attn in (*model.visual_attn, *model.text_attn):
        handles.append(attn.register_forward_pre_hook(want_attention_weights, with_kwargs=True))
        handles.append(attn.register_forward_hook(_drop_weights))
    try:
        model.model.encode_image(inputs.tensors["image"])
        model.model.encode_text(inputs.tensors["text"])
    finally:
        for h in handles:
            h.remove()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 2, 2 repeats")
    add_open_clip_args(parser, "ViT-B-32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224, help="synthetic image side before preprocessing")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: the steadiest timings on a shared machine)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = min(args.batch, 2), min(args.repeats, 2)
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse(argv)
    model = random_openclip(register_open_clip_arch(args.arch, args.model_config))
    samples = make_synthetic(args.batch, seed=0, image_size=args.image_size)
    inputs = model.prepare([s.image for s in samples], [s.caption for s in samples], [s.sample_id for s in samples])
    with torch_threads(args.threads):
        times = interleaved_times({
            "plain": lambda: model.score(inputs),
            "traced": lambda: model.trace(inputs),
            "weights_only": lambda: weights_only_forward(model, inputs),
        }, repeats=args.repeats)
    figures: dict[str, float] = {}
    for clock in ("cpu", "wall"):
        plain, traced, weights = (median(times[k][clock]) for k in ("plain", "traced", "weights_only"))
        figures |= {f"plain_{clock}_s": plain, f"traced_{clock}_s": traced, f"weights_only_{clock}_s": weights,
                    f"traced_over_plain_{clock}": traced / plain, f"weights_only_over_plain_{clock}": weights / plain}
    positive_finite(figures)
    print(f"{args.arch}, random init, batch {args.batch} at {tuple(inputs.tensors['image'].shape[-2:])} px, "
          f"{args.threads} thread(s), median of {args.repeats} interleaved repeats")
    print(f"{'':34}{'CPU time':>10}{'wall time':>11}")
    for label, key in (("plain forward (score)", "plain"), ("traced forward (trace)", "traced"),
                       ("maps requested, not reduced", "weights_only")):
        print(f"{label:34}{figures[key + '_cpu_s'] * 1e3:7.1f} ms{figures[key + '_wall_s'] * 1e3:8.1f} ms")
    for clock in ("cpu", "wall"):
        ratio = figures[f"traced_over_plain_{clock}"]
        print(f"traced / plain ({clock}): {ratio:.3f}  (target <= {TARGET}: {verdict(ratio <= TARGET)}); "
              f"weights only / plain: {figures[f'weights_only_over_plain_{clock}']:.3f}")
    return figures


if __name__ == "__main__":
    main()
