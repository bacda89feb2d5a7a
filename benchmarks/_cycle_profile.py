"""Run the CLI with a sampler that splits its CPU into Prefect + MLflow start-up, their per-call work, and the rest.

Run by ``cycle_wall_time.py`` as ``python -m benchmarks._cycle_profile cycle run ...``. Every 5 ms the
sampler looks at each thread that is on a CPU (``/proc/self/task/<tid>/stat`` state R) and files the
sample under the deepest frame that belongs to prefect, mlflow or the project. The project's code and
what it calls (torch, pandas, scipy, matplotlib, Jinja) is the cycle's work, and so is importing a library the
project's code imports itself, whoever imports it first. Prefect's and MLflow's code and what it calls
(SQLAlchemy, httpx, ...) is split in two:

- start-up, the fixed cost of a run whatever it does: importing prefect and mlflow, or running their code
  while a module is imported (``@task`` and ``@flow`` applied), and building MLflow's store (its SQLAlchemy
  engine and schema check); a local API this CLI starts counts its CPU until it answers;
- per call: task-run states, events and logs sent to the API, evidence written and read. It grows with the
  number of tasks and logged values, and the local API's CPU after it answers is counted here.

Prints one result line.
"""
from __future__ import annotations

import ast
import atexit
import os
import sys
import threading
import time
from pathlib import Path

import psutil

from benchmarks._measure import report_to_parent

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("flows", "tasks", "agents")
PROJECT = tuple(str(ROOT / d) + os.sep for d in SOURCES)
FIXED = (f"{os.sep}prefect{os.sep}", f"{os.sep}mlflow{os.sep}")
INTERVAL = 0.005


def project_libraries() -> frozenset[str]:
    """The third-party packages the project's own code imports (numpy, pandas, torch, pydantic, ...).

    Importing one of them is the project's cost wherever it happens first: Prefect imports numpy and MLflow
    imports pandas before the project does, but the cycle would import them without Prefect and MLflow too.
    Uvicorn is left out: the project imports it only to serve Prefect's API.
    """
    names: set[str] = set()
    for source in SOURCES:
        for path in (ROOT / source).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return frozenset(names - set(sys.stdlib_module_names) - {*SOURCES, "prefect", "mlflow", "uvicorn", "benchmarks"})


PROJECT_LIBRARIES = project_libraries()


def _running(native_id: int) -> bool:
    try:
        stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] == "R"


# MLflow's store construction: the SQLAlchemy engine, the schema check against the database's revision.
_STORE_START = ("_get_sqlalchemy_store", "_get_store_with_resolved_uri")


def _side(frame) -> str:
    """'startup', 'calls', 'work' or 'other' by the deepest frame of prefect, mlflow or the project."""
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(PROJECT) or _imports_project_library(frame):
            return "work"
        if "site-packages" in path and any(p in path for p in FIXED):
            return "startup" if _starting(frame) else "calls"
        frame = frame.f_back
    return "other"


def _starting(frame) -> bool:
    """Whether a prefect/mlflow frame runs inside an import (theirs, or a module of the project applying their
    decorators) or inside MLflow's store construction."""
    while frame is not None:
        if frame.f_code.co_name in _STORE_START or (frame.f_code.co_name == "<module>" and _imported(frame)):
            return True
        frame = frame.f_back
    return False


def _imports_project_library(frame) -> bool:
    """The body of a module of one of the project's own libraries, being imported."""
    return (frame.f_code.co_name == "<module>" and _imported(frame)
            and frame.f_globals.get("__name__", "").split(".")[0] in PROJECT_LIBRARIES)


def _imported(frame) -> bool:
    """A module's body run by the import system (not the script ``python -m`` runs)."""
    return frame.f_back is not None and frame.f_back.f_code.co_filename.startswith("<frozen importlib")


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.counts = {"startup": 0, "calls": 0, "work": 0, "other": 0}
        self.children: dict[int, float] = {}
        self.api_ready_cpu = 0.0  # the local API's CPU when it first answered (its start-up)
        self.halt = threading.Event()

    def run(self) -> None:
        me, tick = threading.get_ident(), 0
        while not self.halt.wait(INTERVAL):
            native = {t.ident: t.native_id for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident != me and ident in native and _running(native[ident]):
                    self.counts[_side(frame)] += 1
            tick += 1
            if tick % 50 == 0:  # every 0.25 s: the local API's CPU so far (it is stopped at exit)
                for child in psutil.Process().children(recursive=True):
                    try:
                        times = child.cpu_times()
                        self.children[child.pid] = times.user + times.system
                    except psutil.Error:
                        pass


def main() -> None:
    sampler = Sampler()
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    _time_api_start_up(sampler)

    def report() -> None:
        sampler.halt.set()
        sampler.join()
        sampled = sum(sampler.counts.values()) or 1
        own_cpu = time.process_time() - start_cpu
        startup, calls = (own_cpu * sampler.counts[k] / sampled for k in ("startup", "calls"))  # samples split the CPU
        children = sum(sampler.children.values())
        api_boot = min(sampler.api_ready_cpu, children)
        total = own_cpu + children
        report_to_parent({"wall_s": time.perf_counter() - start_wall, "cpu_s": total, "local_api_cpu_s": children,
                          "local_api_boot_cpu_s": api_boot, "startup_cpu_s": startup + api_boot,
                          "calls_cpu_s": calls + children - api_boot, **sampler.counts})

    atexit.register(report)  # registered first, so it runs after the CLI's own exit handlers
    sampler.start()
    sys.argv = ["fusionaudit", *sys.argv[1:]]
    from flows.cli import main as cli

    cli()


def _time_api_start_up(sampler: Sampler) -> None:
    """Record the local API's CPU at the moment it first answers (a reused API was booted by an earlier run)."""
    from tasks.runtime import local_api

    wait = local_api.LocalAPI.wait_ready

    def timed(api, *args, **kwargs):
        wait(api, *args, **kwargs)
        if api.process is not None:
            times = psutil.Process(api.process.pid).cpu_times()
            sampler.api_ready_cpu = times.user + times.system

    local_api.LocalAPI.wait_ready = timed


if __name__ == "__main__":
    main()
