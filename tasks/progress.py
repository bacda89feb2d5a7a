"""Progress of a running cycle or calibration, for whoever listens in this process (the CLI's live display).

Stages call ``report(level, name, done, total)``; with no listener (a worker, a deployment run, a test) it
costs nothing. Levels: ``stage`` (the cycle's actions), ``model`` (models within a stage), ``batch`` (batches
within a model). The Prefect UI has its own progress: the per-model progress artifacts.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    level: str      # "stage" | "model" | "batch" | "note" (a line the user must see, e.g. runs of a killed cycle closed)
    name: str       # what is running now, e.g. "T4 diagnostics", "zoo-balanced"
    done: int       # how many of ``total`` are finished
    total: int


_listeners: list[Callable[[Step], None]] = []


def report(level: str, name: str, done: int, total: int) -> None:
    for listener in list(_listeners):
        try:
            listener(Step(level, name, done, total))
        except Exception:  # noqa: BLE001 - a display must never break the work it shows
            pass


def note(text: str) -> None:
    """A one-line message for the terminal, shown whatever the log level (``--verbose`` or not)."""
    report("note", text, 0, 0)


@contextmanager
def listening(listener: Callable[[Step], None]) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
