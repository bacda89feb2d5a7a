"""The decision matrix and the selection: pure functions of the logged probe results.

Each model is judged on its best point among the mission's decision stages
(by default its LM layers: does spatial information reach the language
model?), one threshold at a time: a threshold passes when the judged value
(the estimate, or the CI's lower bound with ``pass_on: ci_low``) lies beyond
it. Calibration and RANDOM-INIT models are judged too, so the report can show
that the method works, but they are never *counted*: only subject models can
be selected. The calibration check asks that every ``keeps`` model passes all
thresholds and every ``destroys`` model fails at least the spatial ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from tasks.evidence import schema

SPATIAL = ("spatial_iou", "bbox_iou")


@dataclass(frozen=True)
class Cell:
    metric: str
    point: str            # the point id whose value is judged (best among the decision points)
    value: float
    judged: float         # what was compared: the estimate or its CI's lower bound
    passed: bool


@dataclass
class Row:
    model: str
    role: str             # "subject" | "calibration" | "random-init"
    cells: list[Cell] = field(default_factory=list)

    @property
    def passed_all(self) -> bool:
        return bool(self.cells) and all(c.passed for c in self.cells)

    @property
    def passed_any(self) -> bool:
        return any(c.passed for c in self.cells)

    def cell(self, metric: str) -> Cell | None:
        return next((c for c in self.cells if c.metric == metric), None)


def judge(model: str, role: str, results: dict[str, dict[str, float]], decision_points: list[str], thresholds,
          pass_on: str) -> Row:
    """``results``: point id → logged metrics (``metric``, ``metric/ci_low``); ``thresholds``: mission Thresholds."""
    row = Row(model, role)
    for t in thresholds:
        best = None
        for point in decision_points:
            value = results.get(point, {}).get(t.metric)
            if value is None or math.isnan(value):
                continue
            judged = results[point].get(schema.metric_field_key(t.metric, "ci_low"), math.nan) if pass_on == "ci_low" else value
            if best is None or (judged, value) > (best.judged, best.value):
                ok = not math.isnan(judged) and (judged > t.value if t.op == ">" else judged >= t.value)
                best = Cell(t.metric, point, value, judged, ok)
        if best is not None:
            row.cells.append(best)
    return row


def select(rows: list[Row], top: int, rank_by: str, require: str) -> list[Row]:
    """The top subject models that pass (all thresholds, or any), ranked by ``rank_by``'s judged value."""
    eligible = [r for r in rows if r.role == "subject" and (r.passed_all if require == "all" else r.passed_any)]
    rank = lambda r: r.cell(rank_by).judged if r.cell(rank_by) else -math.inf  # noqa: E731
    return sorted(eligible, key=lambda r: (-rank(r), r.model))[:top]


def calibration_separated(rows: list[Row], planted: dict[str, str]) -> bool | None:
    """Every ``keeps`` model passes every threshold and every ``destroys`` model fails every spatial one;
    None when the mission has no calibration model that was judged."""
    judged = [r for r in rows if r.model in planted]
    if not judged:
        return None
    for r in judged:
        if planted[r.model] == "keeps" and not r.passed_all:
            return False
        if planted[r.model] == "destroys" and any(c.passed for c in r.cells if c.metric in SPATIAL):
            return False
    return {planted[r.model] for r in judged} == {"keeps", "destroys"}
