"""Wall time of the read-only commands (`cycle list`, `models list`, `report show`) in fresh processes.

Run: uv run python benchmarks/readonly_cli.py [--home DIR] [--reports DIR] [--repeats 3]

Baseline in the same run: `fusionaudit --help` (the CLI's own start-up). Each command is run ``repeats`` times
interleaved with the others against the given store (default: the project's `.fusionaudit` and `reports/`);
the script prints the median seconds, the ratio to the baseline, and whether it meets the target of 5 s.
A fresh process per run: start-up (imports) is exactly what these commands must keep small.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 5.0
BIN = Path(sys.executable).parent / "fusionaudit"
COMMANDS = {
    "baseline: --help": ["--help"],
    "cycle list": ["cycle", "list"],
    "models list": ["models", "list"],
    "report show": ["report", "show", "--raw"],
}


def time_once(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 2):  # 2: "no cycles yet", still a complete answer
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr[-500:]}")
    return elapsed


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("FUSIONAUDIT_HOME", ".fusionaudit"))
    parser.add_argument("--reports", default=os.environ.get("FUSIONAUDIT_REPORTS", "reports"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    env = {**os.environ, "FUSIONAUDIT_HOME": str(Path(args.home).resolve()),
           "FUSIONAUDIT_REPORTS": str(Path(args.reports).resolve()), "HF_HUB_OFFLINE": "1"}
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for r in range(args.repeats):
        order = list(COMMANDS.items())
        for name, cmd in order[r % len(order):] + order[:r % len(order)]:  # rotate: spread drift evenly
            times[name].append(time_once(cmd, env))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    base = medians["baseline: --help"]
    print(f"{'command':<18} {'median s':>9} {'x baseline':>11}  target {TARGET_S:.0f} s")
    for name, m in medians.items():
        verdict = "" if name.startswith("baseline") else ("meets" if m < TARGET_S else "MISSES")
        print(f"{name:<18} {m:9.2f} {m / base:11.2f}  {verdict}")
    return medians


if __name__ == "__main__":
    main()
