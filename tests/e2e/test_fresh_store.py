"""Two cycles started at once on a fresh evidence store both complete and verify (the first migration used to race).

Each repetition starts from an empty FUSIONAUDIT_HOME (a new SQLite store, no
experiment yet) and Prefect's local API, with the smallest cycle: one zoo
model, eight samples.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FUSIONAUDIT = str(Path(sys.executable).parent / "fusionaudit")
ARGS = ("cycle", "run", "--models", "zoo-balanced", "--samples", "8")


@pytest.mark.parametrize("repetition", range(5))
def test_two_cycles_at_once_on_a_fresh_store_both_complete_and_verify(tmp_path, repetition):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FUSIONAUDIT_HOME": str(tmp_path / "home"),
           "FUSIONAUDIT_REPORTS": str(tmp_path / "reports"), "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    both = [subprocess.Popen([FUSIONAUDIT, *ARGS], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True) for _ in range(2)]
    outs = []
    try:
        outs = [proc.communicate(timeout=900)[0] for proc in both]
    finally:
        for proc in both:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    handoffs = []
    for proc, out in zip(both, outs):
        assert proc.returncode in (0, 1), out[-4000:]  # 1: the handoff has findings, caught just below
        assert "not reachable" not in out, out[-4000:]
        handoffs.append(re.search(r"Handoff: (\S+)", out).group(1))
    assert len(set(handoffs)) == 2
    verified = subprocess.run([FUSIONAUDIT, "verify", *handoffs], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
    assert verified.returncode == 0 and "NOT VERIFIED" not in verified.stdout, verified.stdout[-4000:]
