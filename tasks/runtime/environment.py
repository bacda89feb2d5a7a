"""Environment check: interpreter, torch/CUDA, CPU, memory, disk, and packages against the lock.

Nothing secret leaves this module: every string of the snapshot goes through ``redact``.
"""
from __future__ import annotations

import platform
import shutil
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import psutil
import torch
from packaging.version import InvalidVersion, Version

from tasks.runtime.paths import home, tracking_uri
from tasks.runtime.redaction import redact, redacted_env

# The packages the cycle imports; each must be installed for the cycle to run.
REQUIRED = ("prefect", "torch", "torchvision", "transformers", "open-clip-torch", "scipy", "statsmodels", "mlflow", "pandas", "jinja2", "matplotlib", "pydantic")


def snapshot(evidence_dir: Path) -> dict[str, float | str]:
    """Numbers become metrics, strings become params: both are evidence.

    Disk space is measured where the evidence is written (the nearest existing
    parent of ``evidence_dir``), since that is the disk a cycle fills.
    """
    disk_at = _existing_parent(evidence_dir)
    disk = shutil.disk_usage(disk_at)
    gpu = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "gpu_name": torch.cuda.get_device_name(0) if gpu else "none",
        "gpu_count": torch.cuda.device_count() if gpu else 0,
        "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 2) if gpu else 0,
        "cpu_model": cpu_model(),
        "cpu_count": psutil.cpu_count() or 0,
        "ram_total_gb": round(psutil.virtual_memory().total / 2**30, 2),
        "disk_path": str(disk_at),
        "disk_free_gb": round(disk.free / 2**30, 2),
    }


def environment_snapshot(env_key: Callable[[str], str], path: Path | None = None,
                         environ: Mapping[str, str] | None = None) -> dict[str, float | str]:
    """Python, torch, CUDA, GPU name and memory, CPU model and count, RAM, free disk at ``path`` (default: the
    fusionaudit home), the evidence store and the relevant environment variables (each under ``env_key(name)``: the
    evidence schema's key, which this layer below the evidence store does not import),
    every string passed through ``redact`` so no secret reaches the evidence. Numbers become metrics, strings
    params (as ``snapshot``)."""
    snap = snapshot(home() if path is None else Path(path))
    snap["tracking_uri"] = tracking_uri()
    snap |= {env_key(k): v for k, v in redacted_env(environ).items()}
    return {k: redact(v, environ) if isinstance(v, str) else v for k, v in snap.items()}


def cpu_model() -> str:
    """The CPU's marketing name; ``platform.processor()`` is empty on most Linux systems, so read /proc first."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _existing_parent(path: Path) -> Path:
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def locked_versions(lock_path: Path) -> dict[str, str]:
    """Package → locked version(s) from uv.lock, " | "-joined where the lock splits a package by
    Python-version markers (e.g. scipy 1.17.1 for 3.11, 1.18.1 for >= 3.12); empty without a lock."""
    if not lock_path.exists():
        return {}
    data = tomllib.loads(lock_path.read_text(encoding="utf-8"))
    found: dict[str, list[str]] = {}
    for p in data.get("package", []):
        if "version" in p:
            found.setdefault(p["name"], []).append(p["version"])
    return {name: " | ".join(versions) for name, versions in found.items()}


@dataclass(frozen=True)
class Drift:
    """Installed packages whose version differs from uv.lock.

    ``pct`` is over the locked packages that are installed here (``compared``):
    a lock also lists packages for other platforms and optional groups, which
    are absent by design and are not drift (``not_installed`` counts them).
    """

    pct: float
    drifted: list[tuple[str, str, str]] = field(default_factory=list)  # (package, locked, installed)
    compared: int = 0
    locked: int = 0
    not_installed: int = 0


def same_version(locked: str, installed: str) -> bool:
    """PEP 440 equality of the public version: ``2.5.0+cpu`` is the locked ``2.5.0`` built for CPU, ``1.0`` is ``1.0.0``."""
    try:
        return Version(locked).public == Version(installed).public
    except InvalidVersion:
        return locked == installed


def dependency_drift(lock_path: Path) -> Drift:
    """Locked versions (uv.lock, read with tomllib) against what importlib.metadata finds installed."""
    locked = locked_versions(Path(lock_path))
    drifted, compared = [], 0
    for name, want in sorted(locked.items()):
        try:
            have = version(name)
        except PackageNotFoundError:
            continue
        compared += 1
        if not any(same_version(w, have) for w in want.split(" | ")):
            drifted.append((name, want, have))
    pct = round(100 * len(drifted) / compared, 2) if compared else 0.0
    return Drift(pct, drifted, compared, len(locked), len(locked) - compared)


def package_report(lock_path: Path) -> dict[str, object]:
    """Required packages that are missing, and locked packages whose installed version drifted."""
    missing = []
    for name in REQUIRED:
        try:
            version(name)
        except PackageNotFoundError:
            missing.append(name)
    drift = dependency_drift(lock_path)
    return {
        "missing": missing,
        "drifted": [f"{name} {have} (lock {want})" for name, want, have in drift.drifted],
        "locked": drift.locked,
        "drift_pct": drift.pct,
    }
