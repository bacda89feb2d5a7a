"""Towers run once per distinct row: exact duplicates only, results copied back in order."""
from __future__ import annotations

import torch

from tasks.adapters.towers import distinct_rows, encode_distinct


def test_distinct_rows_finds_exact_duplicates_only():
    x = torch.zeros(5, 3, 8, 8)
    x[1] = 1.0
    x[3, 0, 7, 7] = 1e-7  # differs in one element the probe may not see
    first, inverse = distinct_rows(x)
    assert first.tolist() == [0, 1, 3]
    assert inverse.tolist() == [0, 1, 0, 2, 0]


def test_distinct_rows_of_several_tensors_together():
    ids = torch.tensor([[1, 2], [1, 2], [1, 2]])
    mask = torch.tensor([[1, 1], [1, 0], [1, 1]])
    assert distinct_rows(ids, mask)[1].tolist() == [0, 1, 0]


def test_encode_distinct_runs_each_distinct_row_once():
    seen = []

    def encode(x):
        seen.append(len(x))
        return x.sum(-1, keepdim=True) * 2

    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0], [1.0, 2.0]])
    assert encode_distinct(encode, x).flatten().tolist() == [6.0, 6.0, 14.0, 6.0]
    assert seen == [2]
    encode_distinct(encode, torch.eye(3))
    assert seen == [2, 3]  # all distinct: one call on the batch as it is
