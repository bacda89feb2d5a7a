"""The evidence store and everything filed in it.

``tasks.evidence`` itself is the store (``store.py``: logging to MLflow, reading
runs back as ``Cited`` values, verifying reports), so ``from tasks import
evidence; evidence.start_run(...)`` reads as before. Beside it: ``schema``
(every tag name and key builder), ``cited`` (a number and its citation),
``cycles`` (cycle history) and ``recovery`` (closing the runs of killed cycles).
"""
from tasks.evidence.store import (BLOCKED, COMPLETED, EXPERIMENT_TAGS, FAILED, PARENT_TAG, ROOT_TAG, Finding, RunEvidence, RunLog,
                                  claim_before, client, ensure_experiment, fetch_artifacts, find_child, read_run,
                                  read_table, start_run, tracking_uri, verify_markdown)

__all__ = ["BLOCKED", "COMPLETED", "EXPERIMENT_TAGS", "FAILED", "PARENT_TAG", "ROOT_TAG", "Finding", "RunEvidence", "RunLog",
           "claim_before", "client", "ensure_experiment", "fetch_artifacts", "find_child", "read_run", "read_table",
           "start_run", "tracking_uri", "verify_markdown"]
