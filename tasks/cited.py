"""A number together with the place it is logged: the unit every report is built from."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Cited:
    """A value read back from MLflow and its citation.

    ``kind`` is "metric" or "param"; the citation reads ``[run_id:key]`` for a
    metric and ``[run_id:params/key]`` for a param (DESIGN.md, Evidence).
    """

    value: float | int | str
    run_id: str
    key: str
    kind: Literal["metric", "param"] = "metric"

    @property
    def citation(self) -> str:
        key = f"params/{self.key}" if self.kind == "param" else self.key
        return f"[{self.run_id}:{key}]"

    def formatted(self, spec: str = "") -> str:
        return format_number(self.value, spec)


def format_number(value: float | int | str, spec: str = "") -> str:
    """One formatting rule for reports and the verifier, so both agree on digits."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if spec:
        return format(value, spec)
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.3f}"
