"""What every statistic in ``tasks.stats`` shares: the loggable result, NaN, a cleaned sample, zero variance.

Pure functions: numpy arrays in, frozen dataclasses out. Nothing in
``tasks.stats`` knows about Prefect or MLflow; every result has ``as_dict()``
giving a flat ``{name: float | int}`` mapping (booleans become 0/1, strings are
left out) ready for ``mlflow.log_metrics``; the string fields (``note``,
``ci_method``, ...) are available from ``as_params()``.

Conventions
-----------
* Non-finite inputs (NaN, +/-inf) are dropped and counted in ``n_dropped``.
* "Zero variance" means every value is identical, or the sample SD is below
  ``1e-12 * max(1, |mean|)``. Floating-point noise on a constant sample (for
  example ``np.full(10, 0.3)``, whose computed SD is ~1e-17) otherwise makes
  ``scipy.stats.ttest_1samp`` report t ~ -1e16 and p ~ 1e-141, calling a
  degenerate sample significant. Such a sample is *not testable*: t-test p,
  Cohen's d, its CI and the power numbers are NaN, and ``note`` says why.
  Callers must treat NaN p as "not testable", never as "not significant".
* p-values that cannot be computed are NaN, never 0 or 1.
* Resampling is seeded and order-free: bootstrap CIs and sign-flip p-values
  are computed on the sorted sample (differences), so the same values in any
  order give bit-identical results.
* "Balanced" is claimed only by TOST (``balance_call``); a non-significant
  test is reported as "not shown to differ".
"""
from __future__ import annotations

from dataclasses import fields

import numpy as np

NAN = float("nan")
_ZERO_SD_RTOL = 1e-12


class _Loggable:
    """Mixin: flat numeric dict for metrics, string dict for params."""

    def as_dict(self, prefix: str = "") -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, (bool, np.bool_)):
                out[prefix + f.name] = int(v)
            elif isinstance(v, (int, np.integer)):
                out[prefix + f.name] = int(v)
            elif isinstance(v, (float, np.floating)):
                out[prefix + f.name] = float(v)
        return out

    def as_params(self, prefix: str = "") -> dict[str, str]:
        return {
            prefix + f.name: getattr(self, f.name)
            for f in fields(self)  # type: ignore[arg-type]
            if isinstance(getattr(self, f.name), str)
        }


def _clean(values) -> tuple[np.ndarray, int]:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D array of scores, got shape {x.shape}")
    keep = np.isfinite(x)
    return x[keep], int((~keep).sum())


def _is_zero_variance(x: np.ndarray) -> bool:
    if x.size < 2:
        return False
    if np.ptp(x) == 0:
        return True
    sd = float(np.std(x, ddof=1))
    return sd <= _ZERO_SD_RTOL * max(1.0, abs(float(np.mean(x))))


def _join(*notes: str) -> str:
    return "; ".join(dict.fromkeys(n for n in notes if n))
