"""Environment snapshot, dependency drift against a lock written here, and secret redaction."""
from __future__ import annotations

import time
from importlib.metadata import version

import pytest
from packaging.version import Version

from agents.infra_monitor import dependency_drift, environment_snapshot, measure, redact, redacted_env


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


@pytest.mark.parametrize("text, expected", [
    ("postgresql://u:secret@h", "postgresql://u:***@h"),
    ("mysql+pymysql://user:p%40ss@db.example:3306/mlflow", "mysql+pymysql://user:***@db.example:3306/mlflow"),
    ("HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz12", "HF_TOKEN=***"),
    ('{"OPENAI_API_KEY": "sk-live"}', '{"OPENAI_API_KEY": "***"}'),
    ("DB_PASSWORD: hunter22", "DB_PASSWORD: ***"),
    ("token hf_abcdefghijklmnopqrstuvwxyz12 in a log", "token *** in a log"),
    ("http://mlflow.local:5000/api", "http://mlflow.local:5000/api"),  # a port is not a password
    ("MAX_TOKENS=5 TOKENIZERS_PARALLELISM=false", "MAX_TOKENS=5 TOKENIZERS_PARALLELISM=false"),
])
def test_redact_masks_tokens_and_uri_passwords(text, expected):
    assert redact(text, environ={}) == expected


def test_redact_masks_the_value_of_any_secret_variable_wherever_it_appears():
    env = {"GITHUB_TOKEN": "ghp_example_value", "MY_API_KEY": "k-123456", "HOME": "/root"}
    assert redact("cloned with ghp_example_value, key k-123456, home /root", env) == "cloned with ***, key ***, home /root"
    assert redacted_env({"HF_TOKEN": "x" * 10, "HF_HOME": "/cache", "PATH": "/bin"}) == {"HF_HOME": "/cache", "HF_TOKEN": "***"}


def test_snapshot_has_the_machine_and_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://fa:s3cret-pw@db:5432/mlflow")
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnopqrstuvwxyz12")
    snap = environment_snapshot(tmp_path)
    assert {"python", "torch", "cuda", "gpu_name", "gpu_memory_gb", "cpu_model", "cpu_count", "ram_total_gb",
            "disk_free_gb"} <= snap.keys()
    assert snap["disk_path"] == str(tmp_path) and snap["disk_free_gb"] > 0 and snap["cpu_count"] >= 1
    assert snap["tracking_uri"] == "postgresql://fa:***@db:5432/mlflow"
    assert snap["env/HF_TOKEN"] == "***" and snap["env/MLFLOW_TRACKING_URI"] == "postgresql://fa:***@db:5432/mlflow"
    text = repr(snap)
    assert "s3cret-pw" not in text and "hf_abcdefghijklmnopqrstuvwxyz12" not in text


def test_measure_times_the_block():
    with measure(interval_s=0.01) as usage:
        time.sleep(0.05)
    assert usage.wall_s >= 0.05 and usage.peak_rss_mb > 0
