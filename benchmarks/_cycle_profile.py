"""Run the CLI with a sampler that splits its CPU into Prefect + MLflow (fixed costs) and the rest.

Run by ``cycle_wall_time.py`` as ``python -m benchmarks._cycle_profile cycle run ...``. Every 5 ms the
sampler looks at each thread that is on a CPU (``/proc/self/task/<tid>/stat`` state R) and files the
sample under the deepest frame that belongs to prefect, mlflow or the project: importing or running
prefect/mlflow code, and the libraries it calls (SQLAlchemy, httpx, pydantic, ...), is a fixed cost;
the project's code and what it calls (torch, pandas, scipy, matplotlib, Jinja) is the cycle's work. The
CPU time of child processes (Prefect's local API) is a fixed cost too. Prints one result line.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from pathlib import Path

import psutil

from benchmarks._measure import report_to_parent

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tuple(str(ROOT / d) + os.sep for d in ("flows", "tasks", "agents"))
FIXED = (f"{os.sep}prefect{os.sep}", f"{os.sep}mlflow{os.sep}")
INTERVAL = 0.005


def _running(native_id: int) -> bool:
    try:
        stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] == "R"


def _side(frame) -> str:
    """'fixed', 'work' or 'other' by the deepest frame of prefect, mlflow or the project."""
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(PROJECT):
            return "work"
        if "site-packages" in path and any(p in path for p in FIXED):
            return "fixed"
        frame = frame.f_back
    return "other"


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.counts = {"fixed": 0, "work": 0, "other": 0}
        self.children: dict[int, float] = {}
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

    def report() -> None:
        sampler.halt.set()
        sampler.join()
        sampled = sum(sampler.counts.values()) or 1
        own_cpu = time.process_time() - start_cpu
        fixed_own = own_cpu * sampler.counts["fixed"] / sampled  # the samples split the process's CPU time
        children = sum(sampler.children.values())
        report_to_parent({"wall_s": time.perf_counter() - start_wall, "cpu_s": own_cpu + children,
                          "fixed_cpu_s": fixed_own + children, "local_api_cpu_s": children,
                          "fixed_share": (fixed_own + children) / (own_cpu + children), **sampler.counts})

    atexit.register(report)  # registered first, so it runs after the CLI's own exit handlers
    sampler.start()
    sys.argv = ["fusionaudit", *sys.argv[1:]]
    from flows.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
