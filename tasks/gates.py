"""The mission's GO / PIVOT / NEED_MORE_DATA gates, evaluated with their arithmetic visible."""
from __future__ import annotations

from dataclasses import dataclass

from tasks.mission import Gates

GO, PIVOT, NEED_MORE_DATA = "GO", "PIVOT", "NEED_MORE_DATA"


@dataclass(frozen=True)
class GateResult:
    decision: str
    models_tested: int
    models_collapsed: int
    tested: tuple[str, ...]
    collapsed: tuple[str, ...]
    rule: str  # which rule fired, in words


def evaluate_gates(verdicts: dict[str, bool], gates: Gates) -> GateResult:
    """``verdicts`` maps each *tested* model to whether it showed collapse.

    NEED_MORE_DATA when fewer models than the minimum were tested; otherwise GO
    when enough collapsed, else PIVOT (collapse not shown to be field-wide).
    """
    tested = tuple(sorted(verdicts))
    collapsed = tuple(m for m in tested if verdicts[m])
    if len(tested) < gates.min_models_tested:
        decision, rule = NEED_MORE_DATA, "models tested below the minimum"
    elif len(collapsed) >= gates.min_models_collapsed:
        decision, rule = GO, "enough models tested and enough of them collapsed"
    else:
        decision, rule = PIVOT, "enough models tested but too few collapsed"
    return GateResult(decision, len(tested), len(collapsed), tested, collapsed, rule)
