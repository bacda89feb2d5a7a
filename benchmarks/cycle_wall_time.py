"""Wall time of a Week-1 cycle on the embedded defaults: cold (empty caches) vs warm (caches filled).

Run: uv run python benchmarks/cycle_wall_time.py [--samples 64]
Each cycle runs in a fresh subprocess with its own FUSIONAUDIT_HOME and bytecode cache, so "cold"
includes compiling every module and training the calibration zoo, and "warm" reuses the bytecode, the
zoo, the cached diagnostics and the local Prefect API the cold cycle left up (as a user's next cycle
does). Targets: warm <= 30 s and cold <= 120 s on 2 idle CPU cores (on a busy machine the figures only
show proportions). A third, warm cycle runs under a sampler (``benchmarks/_cycle_profile.py``) that
splits its CPU (with the API's CPU during the cycle) into Prefect + MLflow start-up (importing them,
building MLflow's store, booting the API), their per-call work (task states, events, evidence writes and
reads) and the rest. Target: Prefect + MLflow <= 15 % of the warm cycle, checked on all their CPU and on
start-up alone. A fourth does the same with FUSIONAUDIT_LOCAL_API_LINGER_S=0, so the cycle boots its own API.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks._measure import RESULT_MARK
from tasks.runtime.local_api import RECORD

ROOT = Path(__file__).resolve().parent.parent


def run_cycle(home: Path, samples: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flows.cli", "cycle", "run", "--samples", str(samples)], cwd=ROOT, env=_env(home),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _env(home: Path) -> dict[str, str]:
    """The cycles' environment: their own homes, and Python's bytecode cache as on a user's machine.

    The cache lives in this run's folder, so the cold cycle compiles every module it imports (as the first run
    after an install does) and the warm ones reuse it. An inherited PYTHONDONTWRITEBYTECODE (some sandboxes and
    containers set it) would make every cycle compile again: some 9 s of a warm cycle on 2 cores.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | dict(FUSIONAUDIT_HOME=str(home / "home"), FUSIONAUDIT_REPORTS=str(home / "reports"),
                      PREFECT_HOME=str(home / "prefect"), PREFECT_LOCAL_STORAGE_PATH=str(home / "home" / "prefect-results"),
                      PYTHONPYCACHEPREFIX=str(home / "bytecode"))


def profile_cycle(home: Path, samples: int, linger: bool = True) -> dict[str, float]:
    """A warm cycle under the sampler: its CPU split into Prefect + MLflow start-up, their per-call work and the rest.

    The local API an earlier cycle left up is not this process's child: its CPU during the cycle (read through
    its record file) is added to the per-call work, as the sampler adds a child API's CPU after it answered."""
    env = _env(home) | ({} if linger else {"FUSIONAUDIT_LOCAL_API_LINGER_S": "0"})
    server = _left_up_server(home) if linger else None
    before = sum(server.cpu_times()[:2]) if server else 0.0
    done = subprocess.run([sys.executable, "-m", "benchmarks._cycle_profile", "cycle", "run", "--samples", str(samples)],
                          cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith(RESULT_MARK))
    split = json.loads(line[len(RESULT_MARK):])
    served = sum(server.cpu_times()[:2]) - before if server else 0.0
    split |= {"kept_api_cpu_s": served, "cpu_s": split["cpu_s"] + served, "calls_cpu_s": split["calls_cpu_s"] + served}
    split["startup_share"] = split["startup_cpu_s"] / split["cpu_s"]
    split["prefect_mlflow_share"] = (split["startup_cpu_s"] + split["calls_cpu_s"]) / split["cpu_s"]
    return split


def _left_up_server(home: Path) -> psutil.Process | None:
    """The local API a previous cycle left up in this run's Prefect home, if it runs."""
    try:
        return psutil.Process(json.loads((home / "prefect" / RECORD).read_text())["pid"])
    except (OSError, ValueError, KeyError, psutil.Error):
        return None


def _stop_left_up_server(home: Path) -> None:
    server = _left_up_server(home)
    if server is not None:
        server.terminate()
        psutil.wait_procs([server], timeout=10)


def _median(runs) -> dict[str, float]:
    """Each figure's median over the runs (a warm cycle's CPU split varies by a few percent from run to run)."""
    runs = list(runs)
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


TARGET_WARM_S, TARGET_COLD_S, TARGET_FIXED_SHARE = 30.0, 120.0, 0.15


def _verdict(share: float) -> str:
    return f"target <= {TARGET_FIXED_SHARE}: {'met' if share <= TARGET_FIXED_SHARE else 'MISSED'}"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="warm cycles timed, and profiled (medians)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        try:
            cold = run_cycle(home, args.samples)
            warm = statistics.median(run_cycle(home, args.samples) for _ in range(args.repeats))
            split = _median(profile_cycle(home, args.samples) for _ in range(args.repeats))
            own = profile_cycle(home, args.samples, linger=False)
        finally:
            _stop_left_up_server(home)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"samples per model: {args.samples}; load average {load:.1f} on {os.cpu_count()} cores")
    print(f"cold cycle (empty caches): {cold:.1f} s  (target <= {TARGET_COLD_S} s idle: "
          f"{'met' if cold <= TARGET_COLD_S else 'MISSED'})")
    print(f"warm cycle (caches filled, the local API left up by the cold one; median of {args.repeats}): {warm:.1f} s  "
          f"(target <= {TARGET_WARM_S} s "
          f"idle: {'met' if warm <= TARGET_WARM_S else 'MISSED'})")
    print(f"warm / cold: {warm / cold:.2f}")
    for title, f in ((f"warm cycle under the sampler (medians of {args.repeats})", split),
                     ("the same with FUSIONAUDIT_LOCAL_API_LINGER_S=0 (it boots its own API)", own)):
        api_calls = f["local_api_cpu_s"] - f["local_api_boot_cpu_s"] + f["kept_api_cpu_s"]
        print(f"{title}: {f['cpu_s']:.1f} CPU s; Prefect + MLflow start-up {f['startup_cpu_s']:.1f} s (API boot "
              f"{f['local_api_boot_cpu_s']:.1f} s): share {f['startup_share']:.3f} ({_verdict(f['startup_share'])}); "
              f"their per-call work {f['calls_cpu_s']:.1f} s (API {api_calls:.1f} s); all Prefect + MLflow "
              f"{f['prefect_mlflow_share']:.2f} ({_verdict(f['prefect_mlflow_share'])})")
    return {"cold_s": cold, "warm_s": warm, "startup_share": split["startup_share"],
            "startup_share_own_api": own["startup_share"], "prefect_mlflow_share": split["prefect_mlflow_share"],
            "prefect_mlflow_share_own_api": own["prefect_mlflow_share"], "load": load}


if __name__ == "__main__":
    main()
