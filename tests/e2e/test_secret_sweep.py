"""Secret sweep: a real cycle run with planted secrets leaves none in any param, tag, artifact or report."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FUSIONAUDIT = str(Path(sys.executable).parent / "fusionaudit")
PLANTED = {
    # the narrative endpoint (its URL is recorded; the service is down, so its error message is logged too)
    "FUSIONAUDIT_NARRATIVE_URL": "http://127.0.0.1:9/v1?api_key=PLANTEDQUERYKEY42",
    "FUSIONAUDIT_NARRATIVE_MODEL": "local-model",
    "HF_TOKEN": "hf_PLANTEDHFTOKENabcdefghijklmnop",
    "MLFLOW_TRACKING_PASSWORD": "PLANTEDMLFLOWPASSWORD",
    "FUSIONAUDIT_HOME_SECRET": "PLANTEDHOMESECRET",
}
NEEDLES = ("PLANTEDQUERYKEY42", "PLANTEDHFTOKEN", "PLANTEDMLFLOWPASSWORD", "PLANTEDHOMESECRET")


def test_no_planted_secret_reaches_the_evidence_or_the_reports(tmp_path):
    env = {**os.environ, **PLANTED, "OMP_NUM_THREADS": "1", "FUSIONAUDIT_HOME": str(tmp_path / "home"),
           "FUSIONAUDIT_REPORTS": str(tmp_path / "reports"), "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([FUSIONAUDIT, "cycle", "run", "--models", "zoo-balanced", "--samples", "8"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id], max_results=10_000)]
    assert runs
    texts = [repr((r.data.params, r.data.tags)) for r in runs]
    for r in runs:
        folder = Path(download_artifacts(run_id=r.info.run_id, artifact_path="", dst_path=str(tmp_path / "a" / r.info.run_id),
                                         tracking_uri=uri))
        texts += [p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file()]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in (tmp_path / "reports").rglob("*") if p.is_file()]
    texts += [done.stdout, done.stderr]
    leaks = [(needle, text[max(0, text.find(needle) - 80):text.find(needle) + 40]) for text in texts for needle in NEEDLES
             if needle in text]
    assert not leaks, leaks[:5]
