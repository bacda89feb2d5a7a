"""Dual-encoder towers run once per distinct input row.

A masked modality is the same baseline in every row of a batch (the mean
image; the caption's specials around padding, which differs only by caption
length), so a tower that embeds each distinct row once and copies the result
back costs one row per baseline instead of one per sample. Rows are compared
exactly: a cheap probe of a few elements per row finds candidate duplicates,
``torch.equal`` confirms them.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

_PROBE = 64  # elements per row compared first: distinct images or captions almost always differ there


def distinct_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first row of each distinct row, index into it for every row) over the rows of ``tensors`` together."""
    n = tensors[0].shape[0]
    flat = torch.cat([t.reshape(n, -1).to(torch.float64) if t.is_floating_point() else t.reshape(n, -1).double()
                      for t in tensors], dim=1) if len(tensors) > 1 else tensors[0].reshape(n, -1)
    probe = flat[:, :: max(1, flat.shape[1] // _PROBE)]
    _, candidate = torch.unique(probe, dim=0, return_inverse=True)
    first: list[int] = []
    inverse: list[int] = []
    by_candidate: dict[int, list[int]] = {}
    for row, c in enumerate(candidate.tolist()):
        for k in by_candidate.get(c, ()):
            if torch.equal(flat[row], flat[first[k]]):
                inverse.append(k)
                break
        else:
            by_candidate.setdefault(c, []).append(len(first))
            inverse.append(len(first))
            first.append(row)
    return torch.tensor(first, dtype=torch.long), torch.tensor(inverse, dtype=torch.long)


def encode_distinct(encode: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """``encode(*tensors)`` computed on the distinct rows only, then one output row per input row."""
    first, inverse = distinct_rows(*tensors)
    if len(first) == tensors[0].shape[0]:
        return encode(*tensors)
    out = encode(*(t[first] for t in tensors))
    return out[inverse.to(out.device)]
