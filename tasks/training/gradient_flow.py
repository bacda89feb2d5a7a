"""Gradient flow: the norm of each pathway's gradient, layer by layer, step by step.

A pathway that "stops learning" is one whose gradient collapses: from some
step on, its norm stays below ``stall_fraction`` of the largest norm it had.
The curves are logged as MLflow step metrics; ``summarise`` says which
pathway stalled and when.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from tasks.evidence import schema

STALL_FRACTION = 0.1


def norms(pathways) -> dict[tuple[str, str], float]:
    """(pathway, layer) → L2 norm of the layer's gradient (0 where no gradient reached it, e.g. a frozen layer)."""
    out = {}
    for pathway, layers in pathways.items():
        for layer, params in layers:
            squares = [p.grad.detach().float().pow(2).sum() for p in params if p.grad is not None]
            out[pathway, layer] = math.sqrt(float(torch.stack(squares).sum())) if squares else 0.0
    return out


def pathway_totals(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (step, pathway) the whole pathway's gradient norm (layers combined in quadrature)."""
    return (frame.assign(sq=frame["norm"] ** 2).groupby(["step", "pathway"], as_index=False)["sq"].sum()
            .assign(norm=lambda d: d["sq"] ** 0.5).drop(columns="sq"))


def summarise(frame: pd.DataFrame, stall_fraction: float = STALL_FRACTION) -> dict[str, float]:
    """Per pathway: peak norm, final norm / peak, and the step from which it stayed below the stall fraction (−1: never).

    ``frame``: columns step, pathway, layer, norm (as ``train`` records them).
    """
    out: dict[str, float] = {}
    for pathway, g in pathway_totals(frame).groupby("pathway"):
        g = g.sort_values("step")
        peak = float(g["norm"].max())
        out[schema.gradflow_key(pathway, "peak")] = peak
        out[schema.gradflow_key(pathway, "final_ratio")] = float(g["norm"].iloc[-1] / peak) if peak > 0 else 0.0
        low = (g["norm"] < stall_fraction * peak).to_numpy() if peak > 0 else [True] * len(g)
        stall = -1
        for i in range(len(g) - 1, -1, -1):  # the start of the final run of low norms
            if not low[i]:
                break
            stall = int(g["step"].iloc[i])
        out[schema.gradflow_key(pathway, "stall_step")] = stall
    return out
