"""Environment check: interpreter, torch/CUDA, CPU, memory, disk, and packages against the lock."""
from __future__ import annotations

import platform
import shutil
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import psutil
import torch

# The packages the cycle imports; each must be installed for the cycle to run.
REQUIRED = ("prefect", "torch", "torchvision", "transformers", "open-clip-torch", "scipy", "statsmodels", "mlflow", "pandas", "jinja2", "matplotlib", "pydantic")


def snapshot(evidence_dir: Path) -> dict[str, float | str]:
    """Numbers become metrics, strings become params: both are evidence."""
    disk = shutil.disk_usage(evidence_dir if evidence_dir.exists() else Path.cwd())
    gpu = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "gpu_name": torch.cuda.get_device_name(0) if gpu else "none",
        "gpu_count": torch.cuda.device_count() if gpu else 0,
        "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 2) if gpu else 0,
        "cpu_count": psutil.cpu_count() or 0,
        "ram_total_gb": round(psutil.virtual_memory().total / 2**30, 2),
        "disk_free_gb": round(disk.free / 2**30, 2),
    }


def locked_versions(lock_path: Path) -> dict[str, str]:
    """Package → version from uv.lock (empty when there is no lock, e.g. an installed wheel)."""
    if not lock_path.exists():
        return {}
    data = tomllib.loads(lock_path.read_text(encoding="utf-8"))
    return {p["name"]: p["version"] for p in data.get("package", []) if "version" in p}


def package_report(lock_path: Path) -> dict[str, object]:
    """Required packages that are missing, and locked packages whose installed version drifted."""
    missing = []
    for name in REQUIRED:
        try:
            version(name)
        except PackageNotFoundError:
            missing.append(name)
    locked = locked_versions(lock_path)
    drifted = []
    for name, want in locked.items():
        try:
            have = version(name)
        except PackageNotFoundError:
            continue  # platform-specific or optional packages of the lock
        if have != want:
            drifted.append(f"{name} {have} (lock {want})")
    return {
        "missing": missing,
        "drifted": drifted,
        "locked": len(locked),
        "drift_pct": round(100 * len(drifted) / len(locked), 2) if locked else 0.0,
    }
