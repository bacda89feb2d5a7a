"""Wall time of a Week-1 cycle on the embedded defaults: cold (empty caches) vs warm (caches filled).

Run: uv run python benchmarks/cycle_wall_time.py [--samples 64]
Each cycle runs in a fresh subprocess with its own FUSIONAUDIT_HOME, so "cold"
includes training the calibration zoo and "warm" reuses the zoo and the cached
diagnostics. Targets: warm <= 30 s and cold <= 120 s on 2 idle CPU cores (on a
busy machine the figures only show proportions). A third, warm cycle runs under a
sampler (``benchmarks/_cycle_profile.py``) that splits its CPU time into Prefect +
MLflow (importing and running them, and Prefect's local API process) and the
rest; a fourth does the same with a Prefect API that stays up between cycles
(as a lab's server does; its CPU during the cycle counts as fixed). Target:
fixed costs <= 15 % of the warm cycle.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks._measure import RESULT_MARK

ROOT = Path(__file__).resolve().parent.parent


def run_cycle(home: Path, samples: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flows.cli", "cycle", "run", "--samples", str(samples)], cwd=ROOT, env=_env(home),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _env(home: Path) -> dict[str, str]:
    return dict(os.environ, FUSIONAUDIT_HOME=str(home / "home"), FUSIONAUDIT_REPORTS=str(home / "reports"),
                PREFECT_HOME=str(home / "prefect"), PREFECT_LOCAL_STORAGE_PATH=str(home / "home" / "prefect-results"))


def profile_cycle(home: Path, samples: int, api=None) -> dict[str, float]:
    """A warm cycle under the sampler: its CPU split into Prefect + MLflow and the rest.

    With ``api`` (a running ``LocalAPI``) the cycle uses that server, and the server's CPU during the cycle is
    added to the fixed costs."""
    env = _env(home) | ({"PREFECT_API_URL": api.url} if api else {})
    server = psutil.Process(api.process.pid) if api else None
    before = sum(server.cpu_times()[:2]) if server else 0.0
    done = subprocess.run([sys.executable, "-m", "benchmarks._cycle_profile", "cycle", "run", "--samples", str(samples)],
                          cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith(RESULT_MARK))
    split = json.loads(line[len(RESULT_MARK):])
    if server:
        served = sum(server.cpu_times()[:2]) - before
        split |= {"server_cpu_s": served, "cpu_s": split["cpu_s"] + served, "fixed_cpu_s": split["fixed_cpu_s"] + served}
        split["fixed_share"] = split["fixed_cpu_s"] / split["cpu_s"]
    return split


def reused_server(home: Path):
    """Prefect's API started once, outside the cycles (its database in this benchmark's Prefect home)."""
    from tasks.runtime.local_api import start_local_api

    os.environ["PREFECT_HOME"] = str(home / "prefect")
    api = start_local_api()
    os.environ.pop("PREFECT_API_URL", None)  # the cycles get it explicitly
    api.wait_ready()
    return api


TARGET_WARM_S, TARGET_COLD_S, TARGET_FIXED_SHARE = 30.0, 120.0, 0.15


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=64)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        cold = run_cycle(home, args.samples)
        warm = run_cycle(home, args.samples)
        split = profile_cycle(home, args.samples)
        api = reused_server(home)
        try:
            profile_cycle(home, args.samples, api)  # the first cycle on a new server pays its first-use costs
            kept = profile_cycle(home, args.samples, api)
        finally:
            api.stop()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"samples per model: {args.samples}; load average {load:.1f} on {os.cpu_count()} cores")
    print(f"cold cycle (empty caches): {cold:.1f} s  (target <= {TARGET_COLD_S} s idle: "
          f"{'met' if cold <= TARGET_COLD_S else 'MISSED'})")
    print(f"warm cycle (caches filled): {warm:.1f} s  (target <= {TARGET_WARM_S} s idle: "
          f"{'met' if warm <= TARGET_WARM_S else 'MISSED'})")
    print(f"warm / cold: {warm / cold:.2f}")
    print(f"warm cycle under the sampler: {split['cpu_s']:.1f} CPU s, of which Prefect + MLflow "
          f"{split['fixed_cpu_s']:.1f} s (local API process {split['local_api_cpu_s']:.1f} s): fixed share "
          f"{split['fixed_share']:.2f} (target <= {TARGET_FIXED_SHARE}: "
          f"{'met' if split['fixed_share'] <= TARGET_FIXED_SHARE else 'MISSED'})")
    print(f"warm cycle on a Prefect API kept up between cycles: {kept['cpu_s']:.1f} CPU s, of which Prefect + MLflow "
          f"{kept['fixed_cpu_s']:.1f} s (the server {kept['server_cpu_s']:.1f} s): fixed share {kept['fixed_share']:.2f} "
          f"(target <= {TARGET_FIXED_SHARE}: {'met' if kept['fixed_share'] <= TARGET_FIXED_SHARE else 'MISSED'})")
    return {"cold_s": cold, "warm_s": warm, "fixed_share": split["fixed_share"], "fixed_share_kept_server": kept["fixed_share"],
            "load": load}


if __name__ == "__main__":
    main()
