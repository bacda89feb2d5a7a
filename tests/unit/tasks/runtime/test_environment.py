"""Environment snapshot without secrets, and dependency drift against a lock written here (tasks/runtime/environment.py)."""
from __future__ import annotations

from importlib.metadata import version

import pytest
from packaging.version import Version

from tasks.evidence import schema
from tasks.runtime.environment import dependency_drift, environment_snapshot


def _lock(tmp_path, packages: list[tuple[str, str]]):
    body = 'version = 1\nrequires-python = ">=3.11"\n\n' + "\n".join(
        f'[[package]]\nname = "{name}"\nversion = "{ver}"\nsource = {{ registry = "https://pypi.org/simple" }}\n'
        for name, ver in packages)
    path = tmp_path / "uv.lock"
    path.write_text(body)
    return path


def test_drift_lists_package_locked_and_installed_versions(tmp_path):
    pyyaml = version("pyyaml")
    torch_public = Version(version("torch")).public  # the lock has no local label (+cpu / +cu132): not drift
    lock = _lock(tmp_path, [("pytest", version("pytest")), ("pyyaml", "0.0.1"), ("torch", torch_public),
                            ("no-such-package-fa", "1.0")])
    drift = dependency_drift(lock)
    assert drift.drifted == [("pyyaml", "0.0.1", pyyaml)]
    assert (drift.compared, drift.locked, drift.not_installed) == (3, 4, 1)
    assert drift.pct == pytest.approx(33.33)


def test_no_lock_means_no_drift(tmp_path):
    drift = dependency_drift(tmp_path / "uv.lock")
    assert (drift.pct, drift.drifted, drift.locked) == (0.0, [], 0)


def test_snapshot_has_the_machine_and_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://fa:s3cret-pw@db:5432/mlflow")
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnopqrstuvwxyz12")
    snap = environment_snapshot(schema.env_key, tmp_path)
    assert {"python", "torch", "cuda", "gpu_name", "gpu_memory_gb", "cpu_model", "cpu_count", "ram_total_gb",
            "disk_free_gb"} <= snap.keys()
    assert snap["disk_path"] == str(tmp_path) and snap["disk_free_gb"] > 0 and snap["cpu_count"] >= 1
    assert snap["tracking_uri"] == "postgresql://fa:***@db:5432/mlflow"
    assert snap["env/HF_TOKEN"] == "***" and snap["env/MLFLOW_TRACKING_URI"] == "postgresql://fa:***@db:5432/mlflow"
    text = repr(snap)
    assert "s3cret-pw" not in text and "hf_abcdefghijklmnopqrstuvwxyz12" not in text
