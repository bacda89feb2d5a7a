"""MM-SHAP seconds at equal Monte-Carlo error: the project's route against the reference algorithm.

Run: .venv/bin/python benchmarks/mm_shap_reference.py [--quick] [--samples 3] [--layers N]

Reference: the algorithm as the MM-SHAP repository runs it
(``mm-shap_clip_dataset.py``): shap's PermutationExplainer, ten permutations
each walked forward and back (2M+1 coalitions: ten antithetic pairs), and
``get_model_prediction`` runs the model once per coalition, batch 1. Here:
``mm_shap(route="generic", permutations=20, max_rows=1)``, the same estimator
and the same passes. Its per-sample standard error of V-SHAP is the bar.
Ours: ``mm_shap`` with the model's default route (crossed for a dual encoder,
generic otherwise; exact from every subset where that is cheaper), coalitions
batched, and ``target_se`` = the reference's
standard error of that sample, stopping as soon as it is reached (at least 8
orders, the default). A third run, the reference's estimator with its coalitions batched
(``max_rows=None``), splits the gain into batching and estimator. Printed per
model: CPU seconds of each, the achieved standard errors, and the ratios.
Target: reference / ours >= 5x at equal standard error.
Models: the calibration zoo's balanced model (single stream) and open_clip
ViT-B-32 with random weights (``--layers`` cuts its depth for a quick run).
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks._measure import positive_finite, random_openclip, register_open_clip_arch, torch_threads, verdict
from tasks.data.synthetic import make_synthetic
from tasks.diagnostics.mm_shap import mm_shap

TARGET = 5.0
REFERENCE_ORDERS = 20  # 10 forward/reverse pairs: shap's max_evals = 10·(2M+1)


def _timed(fn):
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def compare(model, samples, max_orders: int) -> dict[str, float]:
    t_ref = t_batched = t_ours = 0.0
    se_ref, se_ours, orders = [], [], []
    for k, s in enumerate(samples):
        args = ([s.image], [s.caption], [s.sample_id])
        ref, seconds = _timed(lambda: mm_shap(model, *args, permutations=REFERENCE_ORDERS, route="generic",
                                              max_rows=1, seed=k))
        t_ref += seconds
        batched, seconds = _timed(lambda: mm_shap(model, *args, permutations=REFERENCE_ORDERS, route="generic", seed=k))
        t_batched += seconds
        assert torch.allclose(batched.v, ref.v, atol=1e-5), "batching changed the reference's values"
        target = float(ref.se[0])
        ours, seconds = _timed(lambda: mm_shap(model, *args, permutations=max_orders, target_se=target,
                                               seed=1000 + k))
        t_ours += seconds
        se_ref.append(target)
        se_ours.append(float(ours.se[0]))
        orders.append("exact" if float(ours.se[0]) == 0 else int(ours.permutations[0]))  # exact: every subset
        route = ours.route
    print(f"  route {route}; per sample: reference SE {[round(x, 4) for x in se_ref]}, "
          f"ours SE {[round(x, 4) for x in se_ours]} after {orders} orders")
    return {"reference_s": t_ref, "batched_s": t_batched, "ours_s": t_ours, "speedup": t_ref / t_ours,
            "batching": t_ref / t_batched, "estimator": t_batched / t_ours,
            "se_ratio": sum(se_ours) / max(sum(se_ref), 1e-12)}


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 samples, ViT-B-32 cut to 2 layers")
    parser.add_argument("--samples", type=int, default=3, help="samples of ViT-B-32")
    parser.add_argument("--zoo-samples", type=int, default=12, help="samples of the zoo (milliseconds each)")
    parser.add_argument("--layers", type=int, default=None, help="cut ViT-B-32 to this many blocks per tower")
    parser.add_argument("--max-orders", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.layers = min(args.samples, 2), args.layers or 2
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    from tasks.adapters.zoo.calibration import load_zoo_model

    args = parse(argv)
    samples = make_synthetic(max(args.samples, args.zoo_samples), seed=11)
    figures: dict[str, float] = {}
    clip = random_openclip(register_open_clip_arch("ViT-B-32", layers=args.layers))
    models = {"zoo_balanced": load_zoo_model("balanced"), "vit_b_32": clip}
    with torch_threads(args.threads), torch.no_grad():
        for name, model in models.items():
            mine = samples[:args.zoo_samples] if name.startswith("zoo") else samples[:args.samples]
            print(f"{name}: {len(mine)} samples, reference {REFERENCE_ORDERS} orders (generic, batch 1), CPU seconds")
            result = compare(model, mine, args.max_orders)
            figures |= {f"{name}_{k}": v for k, v in result.items()}
            print(f"  reference {result['reference_s']:.2f} s, reference batched {result['batched_s']:.2f} s, "
                  f"ours {result['ours_s']:.2f} s: batching {result['batching']:.1f}x, estimator "
                  f"{result['estimator']:.1f}x; reference / ours = {result['speedup']:.1f}x at SE ratio {result['se_ratio']:.2f} "
                  f"(target >= {TARGET}x: {verdict(result['speedup'] >= TARGET)})")
    positive_finite({k: v for k, v in figures.items() if k.endswith("_s")})
    return figures


if __name__ == "__main__":
    main()
