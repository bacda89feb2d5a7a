"""Wall time of a Week-1 cycle on the embedded defaults: cold (empty caches) vs warm (caches filled).

Run: uv run python benchmarks/cycle_wall_time.py [--samples 64]
Each cycle runs in a fresh subprocess with its own FUSIONAUDIT_HOME, so "cold"
includes training the calibration zoo and "warm" reuses the zoo and the cached
diagnostics. Targets: warm <= 30 s and cold <= 120 s on 2 idle CPU cores (on a
busy machine the figures only show proportions).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cycle(home: Path, samples: int) -> float:
    env = dict(os.environ, FUSIONAUDIT_HOME=str(home / "home"), FUSIONAUDIT_REPORTS=str(home / "reports"),
               PREFECT_HOME=str(home / "prefect"), PREFECT_LOCAL_STORAGE_PATH=str(home / "home" / "prefect-results"))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flows.cli", "cycle", "run", "--samples", str(samples)], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


TARGET_WARM_S, TARGET_COLD_S = 30.0, 120.0


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=64)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        cold = run_cycle(home, args.samples)
        warm = run_cycle(home, args.samples)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"samples per model: {args.samples}; load average {load:.1f} on {os.cpu_count()} cores")
    print(f"cold cycle (empty caches): {cold:.1f} s  (target <= {TARGET_COLD_S} s idle: "
          f"{'met' if cold <= TARGET_COLD_S else 'MISSED'})")
    print(f"warm cycle (caches filled): {warm:.1f} s  (target <= {TARGET_WARM_S} s idle: "
          f"{'met' if warm <= TARGET_WARM_S else 'MISSED'})")
    print(f"warm / cold: {warm / cold:.2f}")
    return {"cold_s": cold, "warm_s": warm, "load": load}


if __name__ == "__main__":
    main()
