"""After a crash: runs a killed cycle left RUNNING are closed as KILLED before a new cycle starts.

A cycle run records the host and process that own it (tags ``schema.HOST``,
``schema.PID``, ``schema.PID_STARTED``). A RUNNING run whose owner process is gone
from this host was killed (SIGKILL, OOM killer, power loss): it and its
RUNNING descendants are marked KILLED, so nothing stays RUNNING for ever and
no report cites them as finished. Runs owned by a live process — a cycle
running concurrently — or by another host are left alone.
"""
from __future__ import annotations

import os
import socket

import psutil

from tasks import evidence, progress
from tasks.evidence import schema


def owner_tags() -> dict[str, str]:
    me = psutil.Process()
    return {schema.HOST: socket.gethostname(), schema.PID: str(os.getpid()), schema.PID_STARTED: f"{me.create_time():.3f}"}


def _owner_alive(tags: dict[str, str]) -> bool:
    if tags.get(schema.HOST) != socket.gethostname():
        return True  # cannot tell from here: never touch another machine's runs
    try:
        proc = psutil.Process(int(tags[schema.PID]))
        return f"{proc.create_time():.3f}" == tags.get(schema.PID_STARTED)
    except (KeyError, ValueError, psutil.NoSuchProcess):
        return False


def reap_orphans(experiment_id: str) -> list[str]:
    """Mark the RUNNING runs of dead cycles (and their RUNNING descendants) KILLED; returns their run ids."""
    client = evidence.client()
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=10_000)
    cycles = [r for r in running if r.data.tags.get(schema.KIND) == "cycle" and not _owner_alive(r.data.tags)]
    parent_of = {r.info.run_id: r.data.tags.get(evidence.PARENT_TAG) for r in running}
    dead = {r.info.run_id for r in cycles}
    changed = True
    while changed:  # descendants at any depth (cycle → action → model)
        new = {rid for rid, parent in parent_of.items() if parent in dead and rid not in dead}
        dead |= new
        changed = bool(new)
    for rid in dead:
        client.set_tag(rid, schema.STATUS, "Killed")
        client.set_terminated(rid, "KILLED")
    return sorted(dead)


def close_killed_cycles(experiment_id: str) -> list[str]:
    """``reap_orphans``, told to the flow's log and to the terminal (a CLI shows the note with or without --verbose)."""
    reaped = reap_orphans(experiment_id)
    if reaped:
        note = f"closed {len(reaped)} run(s) of a killed cycle as KILLED: {', '.join(reaped)}"
        print(note)  # a flow log line (log_prints): the Prefect UI keeps it
        progress.note(note)
    return reaped
