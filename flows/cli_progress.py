"""What the terminal shows while a cycle or a calibration runs: a live progress display, Prefect kept quiet.

``quiet_logs()`` must run before Prefect is first imported (it reads its logging settings then): Prefect's and
MLflow's log lines then stay out of the terminal (they still reach the Prefect API, so the UI has them);
``--verbose`` skips it.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from tasks import progress

LEVELS = ("stage", "model", "batch")


def await_local_api(api, console: Console) -> None:
    """Wait for the API ``start_local_api`` started (None: nothing to wait for); raises ``LocalAPIError``."""
    if api is not None:
        with console.status("waiting for Prefect's local API"):
            api.wait_ready()


def quiet_logs() -> None:
    """Only critical lines on the console handler (the CLI prints outcomes itself); the API handler (Prefect UI logs) is untouched."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")  # Blocked runs log at ERROR; the CLI reports them
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:  # already imported (tests, a second command in one process): adjust the live handler too
        import sys

        if "prefect" in sys.modules:
            for handler in logging.getLogger().handlers:
                if type(handler).__name__ == "PrefectConsoleHandler":
                    handler.setLevel(logging.CRITICAL)
    except Exception:  # noqa: BLE001 - cosmetics only
        pass


class LiveDisplay:
    """One row per level (stage, model, batch), each with its count, elapsed time and ETA."""

    def __init__(self, console: Console):
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.fields[level]:<6}", style="dim"),
                                 TextColumn("{task.description}", markup=False), BarColumn(bar_width=24), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                                 transient=False, refresh_per_second=4)
        self.rows: dict[str, TaskID] = {level: self.progress.add_task("", level=level, visible=False, total=None)
                                        for level in LEVELS}

    def __call__(self, step: progress.Step) -> None:
        if step.level == "note":
            self.progress.console.print(Text(step.name))  # above the live rows; never markup
            return
        row = self.rows.get(step.level)
        if row is None:
            return
        if step.level == "stage":  # a new stage: its models and batches start afresh
            for level in LEVELS[1:]:
                self.progress.reset(self.rows[level], visible=False, total=None)
        elif step.level == "model":
            self.progress.reset(self.rows["batch"], visible=False, total=None)
        self.progress.update(row, description=step.name, completed=step.done, total=step.total, visible=True)


@contextmanager
def live(console: Console, first_stage: str, total: int) -> Iterator[LiveDisplay]:
    display = LiveDisplay(console)
    with display.progress, progress.listening(display):
        display(progress.Step("stage", first_stage, 0, total))
        yield display


def results_table(rows: list[dict]) -> Table:
    """The cycle's models: status, share with its CI95, verdict (values as logged; the handoff cites them)."""
    table = Table(title="models of this cycle")
    for col in ("model", "status", "share", "CI95", "verdict"):
        table.add_column(col, overflow="fold")
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    for r in rows:
        ci = "—" if r.get("ci95_low") is None else f"{fmt(r['ci95_low'])} to {fmt(r['ci95_high'])}"
        style = {"Blocked": "yellow", "Failed": "red"}.get(r["status"], "")
        table.add_row(Text(r["model"]), Text(r["status"], style=style), fmt(r.get("share")), ci, Text(r.get("call", "")))
    return table
