"""The per-variant decision of a training mission: ADOPT, PARTIAL or ROLLBACK, one pure function.

- **ADOPT**: the gate metric (the image's share of the contributions) rose,
  paired on the same held-out samples of seed-matched models, with the
  Holm-corrected p below alpha; its mean reaches the mission's target; and
  the accuracy is shown not to have dropped by more than the allowed margin
  (the lower bound of the paired CI of the accuracy difference is above
  −margin: a non-inferiority test).
- **PARTIAL**: the share rose significantly, but the target is not reached or
  non-inferiority of the accuracy is not shown.
- **ROLLBACK**: the share did not rise significantly, or the accuracy is
  shown to have dropped by more than the margin (the whole CI below −margin).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

ADOPT, PARTIAL, ROLLBACK = "ADOPT", "PARTIAL", "ROLLBACK"


@dataclass(frozen=True)
class Criteria:
    """What each part of the rule found: logged as 0/1 metrics, so the report shows why."""

    share_improved: bool
    target_met: bool
    accuracy_non_inferior: bool
    accuracy_worse: bool

    def as_dict(self, prefix: str = "") -> dict[str, int]:
        return {f"{prefix}{k}": int(v) for k, v in self.__dict__.items()}


def criteria(share_diff: float, share_p_holm: float, variant_share: float, accuracy_ci_low: float,
             accuracy_ci_high: float, min_visual_share: float, max_accuracy_drop: float, alpha: float) -> Criteria:
    finite = lambda x: x is not None and math.isfinite(x)  # noqa: E731
    return Criteria(
        share_improved=finite(share_diff) and share_diff > 0 and finite(share_p_holm) and share_p_holm < alpha,
        target_met=finite(variant_share) and variant_share >= min_visual_share,
        accuracy_non_inferior=finite(accuracy_ci_low) and accuracy_ci_low >= -max_accuracy_drop,
        accuracy_worse=finite(accuracy_ci_high) and accuracy_ci_high < -max_accuracy_drop,
    )


def decide(c: Criteria) -> str:
    if not c.share_improved or c.accuracy_worse:
        return ROLLBACK
    if c.target_met and c.accuracy_non_inferior:
        return ADOPT
    return PARTIAL
