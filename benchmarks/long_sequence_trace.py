"""Tracing a long sequence: reducing in the hook vs keeping every layer's attention maps.

Run: .venv/bin/python benchmarks/long_sequence_trace.py [--quick]

Model: open_clip ViT-L-14-336 (577 image tokens, 24 layers, 16 heads),
random init, through the project's adapter. ``traced`` is the adapter's
``trace``: each [B, H, N, N] map is reduced inside its forward hook and
dropped. ``naive`` does what ``output_attentions=True`` does: it keeps every
layer's map until the forward ends and reduces them afterwards, with the
same reduction and masks, so both return the same summary (checked).

Peak memory: each variant in a fresh process, as peak RSS above the RSS
after the model is loaded and has run one plain forward (``score``; the
first forward's one-time allocations, ~100 MiB, would otherwise land on
whichever variant runs first); the kernel's high-water mark, see
_measure.py. Time: both variants in this process, interleaved, CPU and
wall clock. Target: naive / traced peak memory >= 5.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks._measure import MiB, add_open_clip_args, forward_args, interleaved_times, median, peak_rss_of, \
    positive_finite, random_openclip, register_open_clip_arch, report_to_parent, run_child, torch_threads, verdict, \
    want_attention_weights
from tasks.data.synthetic import make_synthetic
from tasks.diagnostics.attention import reduce_attention

TARGET = 5.0
VARIANTS = ("traced", "naive")


@torch.no_grad()
def naive_trace(model, inputs) -> dict[str, torch.Tensor]:
    """The adapter's summary computed the output_attentions way: all maps first, reductions after.

    Same masks as OpenClipModel.trace: visual rows and columns are all image
    tokens; text rows are the positions up to EOT.
    """
    image, text = inputs.tensors["image"], inputs.tensors["text"]
    kept: dict[str, list[torch.Tensor]] = {"visual": [], "text": []}

    def keep(tower: str):
        def hook(_module, _args, output):
            kept[tower].append(output[1])  # [B, H, N, N], held until the forward ends
        return hook

    handles = []
    for tower, blocks in (("visual", model.visual_attn), ("text", model.text_attn)):
        for attn in blocks:
            handles.append(attn.register_forward_pre_hook(want_attention_weights, with_kwargs=True))
            handles.append(attn.register_forward_hook(keep(tower)))
    try:
        model.model.encode_image(image)
        model.model.encode_text(text)
    finally:
        for h in handles:
            h.remove()
    eot = model.eot_index(text)
    rows = []
    for tower in ("visual", "text"):
        for probs in kept[tower]:
            k = probs.shape[-1]
            none, every = torch.zeros(k, dtype=torch.bool), torch.ones(k, dtype=torch.bool)
            if tower == "visual":
                masks = (none, every, none, every, none)
            else:
                valid = torch.arange(k)[None, :] <= eot[:, None]
                masks = (none, none, valid, none, valid)
            rows.append(reduce_attention(probs, *masks))
    return {key: torch.stack([r[key] for r in rows], dim=1) for key in rows[0]}


def same_summary(traced, naive: dict[str, torch.Tensor]) -> bool:
    return all(torch.allclose(getattr(traced, key), naive[key], atol=1e-5, equal_nan=True)
               for key in ("entropy_visual", "entropy_text", "visual_share", "text_share"))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 1, 1 repeat, depth cut to --layers")
    add_open_clip_args(parser, "ViT-L-14-336")
    parser.add_argument("--layers", type=int, help="cut each tower to this many blocks (--quick only; default 4 there)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=336, help="synthetic image side before preprocessing")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per variant (ViT-L is slow on a CPU)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant's memory, in this process
    args = parser.parse_args(argv)
    if args.layers is not None and not args.quick:
        parser.error("--layers cuts the depth, and with it the naive baseline's memory: use it only with --quick")
    if args.quick:
        args.batch, args.repeats = min(args.batch, 1), 1
        if args.layers is None and not args.model_config:
            args.layers = 4
    return args


RSS_RESOLUTION_MIB = 1.0  # page-level noise of one process's peak RSS


def _setup(args):
    model = random_openclip(register_open_clip_arch(args.arch, args.model_config, args.layers))
    samples = make_synthetic(args.batch, seed=0, image_size=args.image_size)
    inputs = model.prepare([s.image for s in samples], [s.caption for s in samples], [s.sample_id for s in samples])
    return model, inputs


def child(args) -> None:
    torch.set_num_threads(args.threads)  # a fresh process of its own: nothing to restore
    model, inputs = _setup(args)
    run = (lambda: model.trace(inputs)) if args.child == "traced" else (lambda: naive_trace(model, inputs))
    model.score(inputs)  # pays the first forward's one-time costs (~100 MiB here) outside the measurement
    baseline, peak, _ = peak_rss_of(run)
    report_to_parent({"baseline_bytes": baseline, "peak_bytes": peak})


def _child_args(args) -> list[str]:
    return forward_args(args, "arch", "batch", "image_size", "threads", "model_config", "quick", "layers")


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse(argv)
    if args.child:
        child(args)
        return {}
    memory = {v: run_child(Path(__file__), [*_child_args(args), "--child", v]) for v in VARIANTS}
    # A trace that reuses pages the warm-up forward freed grows the RSS by nothing measurable: below
    # RSS_RESOLUTION_MIB a peak counts as that much, so the ratio stays finite and errs low.
    above = {v: max((memory[v]["peak_bytes"] - memory[v]["baseline_bytes"]) / MiB, RSS_RESOLUTION_MIB) for v in VARIANTS}

    model, inputs = _setup(args)
    with torch_threads(args.threads):
        traced = model.trace(inputs)  # also the warm-up round
        if not same_summary(traced, naive_trace(model, inputs)):
            raise AssertionError("the naive baseline's summary differs from trace's: the comparison would be unfair")
        times = interleaved_times({"traced": lambda: model.trace(inputs),
                                   "naive": lambda: naive_trace(model, inputs)}, repeats=args.repeats, warmup=0)
    n_tokens, n_layers = traced.n_image_tokens, len(model.visual_attn)
    heads = model.visual_attn[0].num_heads
    maps_mib = n_layers * args.batch * heads * n_tokens**2 * 4 / MiB  # the visual maps the naive way holds at once

    figures = {
        "traced_peak_above_mib": above["traced"], "naive_peak_above_mib": above["naive"],
        "traced_peak_total_mib": memory["traced"]["peak_bytes"] / MiB,
        "naive_peak_total_mib": memory["naive"]["peak_bytes"] / MiB,
        "memory_ratio": above["naive"] / above["traced"],
    }
    for clock in ("cpu", "wall"):
        t, n = median(times["traced"][clock]), median(times["naive"][clock])
        figures |= {f"traced_{clock}_s": t, f"naive_{clock}_s": n, f"time_ratio_{clock}": n / t}
    positive_finite(figures)

    depth = f"cut to {args.layers} layers (quick)" if args.layers is not None else f"{n_layers} layers"
    print(f"{args.arch}, random init, {depth}, {n_tokens} image tokens x {heads} heads, batch {args.batch}, "
          f"{args.threads} thread(s)")
    print(f"visual attention maps of all layers: {maps_mib:.0f} MiB")
    print("peak RSS above the loaded, warmed-up model (fresh process per variant):")
    for label, v in (("traced (reduce in hook):", "traced"), ("naive (keep all maps):", "naive")):
        print(f"  {label:25}{above[v]:9.1f} MiB   (total peak {figures[f'{v}_peak_total_mib']:.0f} MiB)")
    judged = verdict(figures["memory_ratio"] >= TARGET) if args.layers is None else "judged at full depth only"
    print(f"  naive / traced: {figures['memory_ratio']:.2f}  (target >= {TARGET}: {judged})")
    print(f"time, median of {args.repeats} interleaved repeats:")
    for clock in ("cpu", "wall"):
        print(f"  {clock:4}: traced {figures[f'traced_{clock}_s']:7.2f} s, "
              f"naive {figures[f'naive_{clock}_s']:7.2f} s, naive / traced {figures[f'time_ratio_{clock}']:.3f}")
    return figures


if __name__ == "__main__":
    main()
