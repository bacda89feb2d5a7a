"""Shared benchmark helpers: interleaved timing, peak RSS of a call, fresh-process runs, open_clip configs.

Peak memory of torch CPU tensors is invisible to tracemalloc, so it is read
from the kernel: ``/proc/self/clear_refs`` (write "5") resets the process's
high-water mark ``VmHWM``, which then holds the peak RSS of exactly the
measured call. Where that file is not writable, a thread samples the RSS
every millisecond instead (it can miss a spike shorter than that).
"""
from __future__ import annotations

import gc
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import psutil

MiB = 1024 * 1024
RESULT_MARK = "BENCH_RESULT "  # the line a child process reports its figures on


# --- timing -----------------------------------------------------------------

def interleaved_times(variants: dict[str, Callable[[], object]], repeats: int,
                      warmup: int = 1) -> dict[str, dict[str, list[float]]]:
    """Seconds of each variant, ``repeats`` times, run round-robin after ``warmup`` rounds.

    Returns {variant: {"wall": [...], "cpu": [...]}}. Round-robin with the
    order rotated every round spreads slow drift (other jobs, thermal state)
    evenly over the variants. CPU time (this process, all its threads) is
    kept too: on a shared machine wall time also counts the waits for a core.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: need at least one timed repeat per variant")
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall, cpu = time.perf_counter(), time.process_time()
            variants[name]()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


# --- memory -------------------------------------------------------------------

def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def _read_hwm() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS; False where this kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _read_hwm() is not None


class _RssSampler(threading.Thread):
    """Fallback peak tracker: the largest RSS seen while the call runs."""

    def __init__(self, interval: float = 0.001):
        super().__init__(daemon=True)
        self.interval, self.peak = interval, rss_bytes()
        self._done = threading.Event()
        self._process = psutil.Process()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self.interval)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, rss_bytes())


def peak_rss_of(fn: Callable[[], object]) -> tuple[int, int, object]:
    """(RSS before the call, peak RSS during it, fn's result), in bytes."""
    gc.collect()
    baseline = rss_bytes()
    if _reset_hwm():
        result = fn()
        peak = _read_hwm()
    else:
        sampler = _RssSampler()
        sampler.start()
        try:
            result = fn()
        finally:
            peak = sampler.stop()
    return baseline, max(peak, baseline), result


# --- fresh processes ------------------------------------------------------------

def report_to_parent(figures: dict) -> None:
    """What a child prints as its last line; ``run_child`` reads it back."""
    print(RESULT_MARK + json.dumps(figures), flush=True)


def run_child(script: Path, args: list[str]) -> dict:
    """Run ``script`` with ``args`` in a fresh interpreter and return the figures it reported."""
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} exited with {done.returncode}; "
                           f"its stderr ends with:\n{done.stderr[-3000:]}")
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    raise RuntimeError(f"{script.name} {' '.join(args)} printed no '{RESULT_MARK.strip()}' line; "
                       f"stdout ends with:\n{done.stdout[-3000:]}")


def forward_args(args, *names: str) -> list[str]:
    """The parent's options ``names`` (argparse dests) as words for a fresh child: ``--batch-size 32``;
    an option left unset (None, False) is left out, a set flag is passed bare."""
    words: list[str] = []
    for name in names:
        value = getattr(args, name)
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return words


# --- checks and formatting ----------------------------------------------------------

def positive_finite(figures: dict[str, float]) -> dict[str, float]:
    """The figures unchanged; raises when one is not a positive finite number (a broken measurement)."""
    bad = {k: v for k, v in figures.items() if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0)}
    if bad:
        raise ValueError(f"measured figures must be positive and finite; got {bad}")
    return figures


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


# --- open_clip model names ----------------------------------------------------------

def add_open_clip_args(parser, arch: str | None, arch_help: str = "open_clip model name") -> None:
    """``--arch`` (default ``arch``) and ``--model-config``, the options every open_clip benchmark takes."""
    parser.add_argument("--arch", default=arch, help=arch_help)
    parser.add_argument("--model-config", help="JSON open_clip config registered under --arch (tests: a tiny model)")


def register_open_clip_arch(arch: str, config_json: str | None = None, layers: int | None = None) -> str:
    """The open_clip model name to build.

    ``config_json`` registers that config under ``arch`` (tests: a tiny
    config); ``layers`` registers ``arch`` cut to that many blocks per tower
    as ``<arch>-<layers>L`` (quick runs only: depth scales time and the
    naive baseline's memory linearly). Each process must call this itself:
    open_clip keeps its registry in memory.
    """
    import open_clip  # heavy: only the processes that build a model pay for it

    name, config = arch, None
    if config_json:
        config = json.loads(config_json)
    if layers is not None:
        config = config or open_clip.get_model_config(arch)
        if config is None:
            raise ValueError(f"unknown open_clip architecture {arch!r}: nothing to cut to {layers} layers")
        config = json.loads(json.dumps(config))  # deep copy: never edit open_clip's registry entry
        config["vision_cfg"]["layers"] = layers
        config["text_cfg"]["layers"] = min(layers, config["text_cfg"].get("layers", layers))
        name = f"{arch}-{layers}L"
    if config is not None:
        # open_clip reads the file into its registry at once; the folder can go right after
        with tempfile.TemporaryDirectory(prefix="fusionaudit-bench-config-") as folder:
            (Path(folder) / f"{name}.json").write_text(json.dumps(config))
            open_clip.add_model_config(folder)
    return name


def want_attention_weights(_module, args, kwargs):
    """kwargs pre-hook: open_clip calls nn.MultiheadAttention with need_weights=False; ask for per-head maps.

    The same request OpenClipModel.trace makes, so a baseline built on it does the same attention work.
    """
    return args, {**kwargs, "need_weights": True, "average_attn_weights": False}


def random_openclip(name: str, device: str = "cpu"):
    """The project's open_clip adapter on random weights of ``name`` (seeded: the same model every run)."""
    import torch

    from tasks.adapters.contract import ModelSpec
    from tasks.adapters.openclip import OpenClipAdapter

    spec = ModelSpec(name=f"bench-{name}", adapter="openclip", source="", arch=name, allow_random_init=True)
    with torch.random.fork_rng(devices=[]):  # a caller's (a test's) random stream stays untouched
        torch.manual_seed(0)
        return OpenClipAdapter(device=device).load(spec)


@contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` for the block, restored after (main() also runs inside tests)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
