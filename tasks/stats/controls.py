"""Controls: the planted direction of each calibration model and whether the measurement found it.

A calibration model (``calibration: true`` in the mission) has planted
behaviour; it shows that the verdict metric detects collapse where it is
known to exist and does not invent it. It is never a subject of the gates.
"""
from __future__ import annotations

# (adapter, source) → the planted direction: "image" / "text" (collapse toward it), "balanced"
# (no collapse), "mixed" (per-sample dominance in both directions).
PLANTED = {
    ("zoo", "text_dominant"): "text",
    ("zoo", "balanced"): "balanced",
    ("zoo", "vision_dominant"): "image",
    ("planted", "image_only"): "image",
    ("planted", "text_only"): "text",
    ("planted", "constant"): "image",
    ("planted", "additive"): "balanced",
    ("planted", "multiplicative"): "balanced",
    ("planted", "mixed"): "mixed",
}


def planted_direction(adapter: str, source: str) -> str | None:
    """The planted direction of a calibration model, or None when its adapter plants nothing known."""
    return PLANTED.get((adapter, source))


def measured_direction(collapsed: bool, dominant: str, label: str, direction: str) -> str:
    """What the verdict found, in the planted vocabulary."""
    if collapsed:
        return dominant
    if label == "per-sample dominance":
        return "mixed" if direction == "mixed" else f"per-sample {direction}"
    return "not collapsed"


def control_passed(planted: str | None, measured: str) -> bool | None:
    """A dominant control must collapse toward its planted side; a balanced one must not collapse at all."""
    if planted is None:
        return None
    if planted == "balanced":
        return measured == "not collapsed"
    return measured == planted
