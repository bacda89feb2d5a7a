"""Cycle history: the fast SQLite read gives exactly what MLflow's client gives, on a real store."""
from pathlib import Path

from tasks import evidence
from tasks.evidence import cycles


def test_sql_read_matches_the_mlflow_client():
    exp = evidence.ensure_experiment("test-cycles")
    first = evidence.start_run(exp, "cycle a", tags={"fa.kind": "cycle", "fa.cycle_id": "a", "fa.cycle_number": "1"})
    first.metrics({"actions_total": 7, "actions_completed": 5, "actions_blocked": 1, "actions_failed": 1})
    first.tags({"fa.decision": "GO"})
    first.finish()
    evidence.start_run(exp, "not a cycle", tags={"fa.kind": "action"})
    evidence.start_run(exp, "cycle b", tags={"fa.kind": "cycle", "fa.cycle_id": "b", "fa.cycle_number": "2",
                                             "fa.previous_cycle_run": first.run_id})
    uri = evidence.tracking_uri()
    assert uri.startswith("sqlite:///")
    fast = cycles._from_sqlite(Path(uri.removeprefix("sqlite:///")), "test-cycles")
    assert fast == cycles._from_client("test-cycles") == cycles.list_cycles("test-cycles")
    assert [(c.cycle_id, c.status, c.actions_completed, c.decision) for c in fast] == [
        ("a", "FINISHED", 5, "GO"), ("b", "RUNNING", None, "—")]
    assert cycles._from_sqlite(Path(uri.removeprefix("sqlite:///")), "no-such-mission") == []
