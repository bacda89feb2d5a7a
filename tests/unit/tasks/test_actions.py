"""How a Blocked outcome looks to Prefect: terminal, never Completed, its outcome still readable."""
from prefect.states import StateType

from tasks.actions import BLOCKED, Outcome, blocked, stage_label
from tasks.mission import load_mission
from tasks.runtime.paths import DEFAULT_MISSION


def test_blocked_is_a_terminal_state_that_is_not_completed_and_keeps_its_outcome():
    outcome = Outcome("clip-vit-b-32", BLOCKED, "r" * 32, reason="no weights")
    state = blocked(outcome)
    assert state.name == "Blocked" and state.type == StateType.CANCELLED
    assert state.is_final() and not state.is_completed() and not state.is_failed()
    assert state.result(raise_on_failure=False) is outcome


def test_stage_labels_say_what_the_task_does():
    mission = load_mission(DEFAULT_MISSION)
    labels = {stage_label(a) for a in mission.actions}
    assert {"T1 adapters", "T6 alternative models"} <= labels
