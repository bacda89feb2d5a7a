"""What a block of work cost: wall time, peak resident memory (sampled), peak GPU memory."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
import torch


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
