"""Linear CKA: invariances, and the debiased form's zero for unrelated representations at small n."""
from __future__ import annotations

import numpy as np
import pytest

from tasks.probing.alignment import cka_matrix, linear_cka


def test_cka_is_one_under_rotation_and_scale_and_symmetric():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(x, 3 * x @ q) == pytest.approx(1.0)
    y = rng.normal(size=(50, 5))
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))


def test_debiased_cka_removes_the_small_sample_bias():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 200)), rng.normal(size=(20, 300))
    assert linear_cka(x, y) > 0.5            # unrelated, yet the plain estimator is high at n=20
    assert abs(linear_cka(x, y, debiased=True)) < 0.1


def test_matrix_and_bad_input():
    rng = np.random.default_rng(2)
    names, m = cka_matrix({"a": rng.normal(size=(30, 4)), "b": rng.normal(size=(30, 6))})
    assert names == ["a", "b"] and m.shape == (2, 2) and m[0, 0] == 1 and m[0, 1] == m[1, 0]
    with pytest.raises(ValueError, match="same images"):
        linear_cka(np.zeros((3, 2)), np.zeros((4, 2)))
