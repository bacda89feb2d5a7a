"""Infrastructure & Performance Monitor: what each task cost, the machine it ran on, drift from the lock.

Nothing secret leaves this module: every string of the snapshot goes through ``redact``.
"""
from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from tasks import environment, evidence
from tasks.environment import Drift
from tasks.redaction import MASK, SECRET_NAME, redact  # noqa: F401 - re-exported: one rule for every caller
from tasks.paths import home


@dataclass
class Usage:
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float = 0.0

    def as_metrics(self) -> dict[str, float]:
        return {"duration_s": round(self.wall_s, 3), "peak_rss_mb": round(self.peak_rss_mb, 1), "peak_gpu_mb": round(self.peak_gpu_mb, 1)}


@contextmanager
def measure(interval_s: float = 0.05):
    """Wall time and peak resident memory (sampled) of the block; GPU peak from torch's allocator."""
    usage = Usage()
    proc = psutil.Process()
    stop = threading.Event()
    peak = [proc.memory_info().rss]

    def sample() -> None:
        while not stop.wait(interval_s):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    sampler.start()
    try:
        yield usage
    finally:
        stop.set()
        sampler.join()
        peak[0] = max(peak[0], proc.memory_info().rss)
        usage.wall_s = time.perf_counter() - start
        usage.peak_rss_mb = peak[0] / 2**20
        usage.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if gpu else 0.0


# ------------------------------------------------------------------ environment and secrets

# Variables worth recording (where evidence, caches and orchestration live), values redacted.
_RECORDED_ENV = re.compile(r"^(?:FUSIONAUDIT_|MLFLOW_|PREFECT_API_URL$|HF_|TRANSFORMERS_|CUDA_VISIBLE_DEVICES$|OMP_NUM_THREADS$)")


def redacted_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The recorded variables (evidence/cache/orchestration locations), secret values masked."""
    env = os.environ if environ is None else environ
    return {name: MASK if SECRET_NAME.match(name) else redact(value, env)
            for name, value in sorted(env.items()) if _RECORDED_ENV.match(name)}


def environment_snapshot(path: Path | None = None, environ: Mapping[str, str] | None = None) -> dict[str, float | str]:
    """Python, torch, CUDA, GPU name and memory, CPU model and count, RAM, free disk at ``path`` (default: the
    fusionaudit home), the evidence store and the relevant environment variables, every string passed through
    ``redact`` so no secret reaches the evidence. Numbers become metrics, strings params (as ``snapshot``)."""
    snap = environment.snapshot(home() if path is None else Path(path))
    snap["tracking_uri"] = evidence.tracking_uri()
    snap |= {f"env/{k}": v for k, v in redacted_env(environ).items()}
    return {k: redact(v, environ) if isinstance(v, str) else v for k, v in snap.items()}


def dependency_drift(lock_path: Path) -> Drift:
    """Locked (uv.lock) vs installed versions: ``Drift(pct, drifted=[(package, locked, installed)])``."""
    return environment.dependency_drift(lock_path)
