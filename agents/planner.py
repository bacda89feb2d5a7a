"""Planning team: the mission's actions as a prioritised plan, and the next cycle's substitutions."""
from __future__ import annotations

from datetime import datetime, timedelta

from tasks.mission import PRIORITY_ORDER, Mission


def pending_actions(mission: Mission, cycle_start: datetime) -> list[dict]:
    """The plan this cycle executes, in execution priority (HIGH first, then by deadline)."""
    ordered = sorted(mission.actions, key=lambda a: (PRIORITY_ORDER[a.priority], a.deadline_hours, a.id))
    return [{
        "id": a.id, "title": a.title, "priority": a.priority, "owner": a.owner, "stage": a.stage,
        "deadline": (cycle_start + timedelta(hours=a.deadline_hours)).isoformat(timespec="minutes"),
        "deadline_hours": a.deadline_hours, "depends_on": list(a.depends_on),
        "acceptance": [{"description": c.description, "check": str(c)} for c in a.acceptance],
    } for a in ordered]


def substitutions(mission: Mission, blocked_models: list[str]) -> dict[str, list[str]]:
    """For each blocked model, the mission's alternatives to try in the next cycle."""
    return {name: list(mission.model(name).alternatives) for name in blocked_models
            if any(m.name == name for m in mission.models)}
