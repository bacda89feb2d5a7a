"""MM-SHAP cost per sample: the dual-encoder (separable) route against the generic route.

Run: uv run python benchmarks/mm_shap_cost.py [--samples 4] [--permutations 8] [--arch ViT-B-32]

On a random-init open_clip model (the real architecture, no download) both
routes see the same permutations, so they must give the same values; the
generic route runs both towers for every coalition, the separable route
runs the image tower only for image coalitions and the text tower only for
text coalitions. A calibration-zoo model (single-stream: generic route
only) is measured for scale. Printed: model passes per sample (image-tower
and text-tower), seconds per sample, and the ratios generic / separable.
"""
from __future__ import annotations

import argparse
import time

import torch

from tasks.adapters.contract import ModelSpec
from tasks.adapters.openclip import OpenClipAdapter
from tasks.adapters.zoo.calibration import load_zoo_model
from tasks.data.synthetic import make_synthetic
from tasks.diagnostics.mm_shap import mm_shap


def measure(model, samples, permutations: int, route: str):
    images, captions, ids = [s.image for s in samples], [s.caption for s in samples], [s.sample_id for s in samples]
    start = time.perf_counter()
    result = mm_shap(model, images, captions, ids, permutations=permutations, route=route, seed=0)
    return result, (time.perf_counter() - start) / len(samples)


def row(label: str, result, seconds: float) -> str:
    image, text = result.image_passes.float().mean().item(), result.text_passes.float().mean().item()
    return (f"{label:<34} image-tower passes {image:7.1f}   text-tower passes {text:7.1f}   "
            f"model calls {result.score_calls:4d}   {seconds:7.3f} s/sample")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--permutations", type=int, default=8)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    samples = make_synthetic(args.samples, seed=0)
    print(f"{args.samples} samples, {args.permutations} permutations (antithetic pairs), device {args.device}, "
          f"torch threads {torch.get_num_threads()}")

    torch.manual_seed(0)
    clip = OpenClipAdapter(device=args.device).load(
        ModelSpec(name=f"{args.arch}-random", adapter="openclip", source="", arch=args.arch, allow_random_init=True))
    measure(clip, samples[:1], 2, "separable")  # warm-up: first-call allocations are not MM-SHAP's cost
    generic, t_generic = measure(clip, samples, args.permutations, "generic")
    separable, t_separable = measure(clip, samples, args.permutations, "separable")
    print(f"\nopen_clip {args.arch} (random init), players per sample: text {separable.n_text.tolist()}, "
          f"image cells {(separable.grid**2).tolist()}")
    print(row("generic route", generic, t_generic))
    print(row("separable route", separable, t_separable))
    ratio_image = generic.image_passes.sum().item() / separable.image_passes.sum().item()
    ratio_text = generic.text_passes.sum().item() / separable.text_passes.sum().item()
    print(f"{'generic / separable':<34} image-tower passes x{ratio_image:.2f}   text-tower passes x{ratio_text:.2f}   "
          f"seconds x{t_generic / t_separable:.2f}")
    print(f"{'max |V-SHAP generic - separable|':<34} {(generic.v - separable.v).abs().max().item():.2e} "
          f"(same permutations; float rounding only)")

    zoo = load_zoo_model("balanced")
    measure(zoo, samples[:1], 2, "generic")
    result, seconds = measure(zoo, samples, args.permutations, "generic")
    print(f"\ncalibration zoo 'balanced' (single stream), players per sample: text {result.n_text.tolist()}, "
          f"image cells {(result.grid**2).tolist()}")
    print(row("generic route (the only one)", result, seconds))


if __name__ == "__main__":
    main()
