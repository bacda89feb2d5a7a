"""A real Prefect server, an MLflow tracking server and two process workers, on loopback only.

The stack is the one docs/prefect-server.md tells a user to start: the pool
and the deployments are created with the documented Prefect commands, the
cycle is triggered from the CLI with ``--fan-out``, and the per-model
diagnostics must land on both workers. The browser test then opens the
Prefect UI of the same server in headless Chromium.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODELS = ("zoo-text-dominant", "zoo-balanced", "zoo-vision-dominant")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("FUSIONAUDIT_TEST_ARTIFACTS", ROOT / "reports" / "test-artifacts"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


class Stack:
    """Processes started by this test; ``stop`` ends them all, children included."""

    def __init__(self, tmp: Path):
        self.tmp, self.procs, self.logs = tmp, [], {}
        self.prefect_port, self.mlflow_port = _free_port(), _free_port()
        home = tmp / "home"
        self.env = {
            **os.environ,
            "PREFECT_API_URL": f"http://127.0.0.1:{self.prefect_port}/api",
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{self.prefect_port}/api",  # the UI's own default is port 4200
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp / 'prefect.db'}",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_LOCAL_STORAGE_PATH": str(home / "prefect-results"),
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{self.mlflow_port}",
            "FUSIONAUDIT_HOME": str(home),
            "FUSIONAUDIT_REPORTS": str(tmp / "reports"),
            "FUSIONAUDIT_PROJECT_DIR": str(ROOT),
            "OMP_NUM_THREADS": "1",
        }
        self.env.pop("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", None)  # the workers' log lines are what the tests read

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        self.logs[name] = log
        return proc

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    def stop(self) -> None:
        tree = [p for proc in self.procs for p in _tree(proc.pid)]
        for proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=20)
        for p in alive:
            p.kill()
        psutil.wait_procs(alive, timeout=10)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server-stack")
    s = Stack(tmp)
    started = [p for p in _tree(os.getpid())]
    try:
        server = s.start("prefect-server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                         "--port", str(s.prefect_port))
        mlflow = s.start("mlflow-server", str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(s.mlflow_port),
                         "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination", str(tmp / "mlartifacts"),
                         "--workers", "1")
        _wait_http(f"http://127.0.0.1:{s.prefect_port}/api/health", server, s.logs["prefect-server"])
        _wait_http(f"http://127.0.0.1:{s.mlflow_port}/health", mlflow, s.logs["mlflow-server"])
        # The documented setup (docs/prefect-server.md): pool, deployments, one worker per GPU machine.
        s.run(str(BIN / "prefect"), "work-pool", "create", "fusionaudit", "--type", "process")
        s.run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all")
        for name in ("worker-a", "worker-b"):
            s.start(name, str(BIN / "prefect"), "worker", "start", "--pool", "fusionaudit", "--name", name, "--limit", "1")
        yield s
    finally:
        s.stop()
        before = {p.pid for p in started}
        leftover = [p for p in _tree(os.getpid()) if p.pid not in before and p.is_running()
                    and p.status() != psutil.STATUS_ZOMBIE]
        assert not leftover, f"processes left running: {[p.cmdline() for p in leftover]}"


@pytest.fixture(scope="module")
def fanned_out_cycle(stack):
    """A three-model cycle triggered from the CLI, its diagnostics fanned out to the workers."""
    done = stack.run(str(BIN / "fusionaudit"), "cycle", "run", "--models", ",".join(MODELS), "--samples", "16", "--fan-out",
                     timeout=900)
    handoff = Path(re.search(r"Handoff: (\S+)", done.stdout).group(1))
    return done, handoff


def _flow_runs(stack: Stack, flow_name: str) -> list:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with SyncPrefectClient(stack.env["PREFECT_API_URL"]) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))


def test_fan_out_runs_on_both_workers_and_handoff_verifies(stack, fanned_out_cycle):
    done, handoff = fanned_out_cycle
    assert "decision" in done.stdout.lower() and handoff.exists()

    runs = _flow_runs(stack, "diagnose-model")
    assert len(runs) == len(MODELS) and all(r.state.is_completed() for r in runs)
    # A worker that lost the race for a run logs "Aborted submission"; only "submitted to infrastructure" counts.
    by_worker = {name: [r for r in runs if f"Flow run '{r.name}' submitted to infrastructure" in stack.logs[name].read_text()]
                 for name in ("worker-a", "worker-b")}
    assert all(by_worker.values()), f"each worker must run diagnose-model runs: {({k: len(v) for k, v in by_worker.items()})}"

    cycle = _flow_runs(stack, "week1-cycle")
    assert len(cycle) == 1 and cycle[0].state.is_completed()
    assert {str(r.parent_task_run_id) for r in runs} != {"None"}, "diagnose-model runs are linked to the cycle as subflows"

    verify = stack.run(str(BIN / "fusionaudit"), "verify", str(handoff))  # against the MLflow *server*
    assert "VERIFIED" in verify.stdout and "NOT VERIFIED" not in verify.stdout


def test_prefect_ui_shows_cycle_subflows_and_handoff(stack, fanned_out_cycle):
    if not Path(CHROMIUM).exists():
        if os.environ.get("FUSIONAUDIT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not found: `apt-get install chromium` to run the browser test (.ci/run does)")
    from playwright.sync_api import sync_playwright

    cycle = _flow_runs(stack, "week1-cycle")[0]
    ui = f"http://127.0.0.1:{stack.prefect_port}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.goto(f"{ui}/runs/flow-run/{cycle.id}", wait_until="networkidle", timeout=90_000)
            page.get_by_text(cycle.name).first.wait_for(timeout=60_000)
            page.get_by_text("Subflow Runs", exact=True).first.click()  # the run page's tabs are plain text
            page.get_by_text(re.compile("diagnose", re.I)).first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "prefect-ui-subflows.png"), full_page=True)
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text(re.compile("handoff-", re.I)).first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "prefect-ui-artifacts.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "prefect-ui-subflows.png").stat().st_size > 10_000
    assert (ARTIFACTS / "prefect-ui-artifacts.png").stat().st_size > 10_000


def _browser_or_skip():
    if not Path(CHROMIUM).exists():
        if os.environ.get("FUSIONAUDIT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not found: `apt-get install chromium` to run the browser test (.ci/run does)")


def test_uis_show_the_handoff_with_its_plots_and_blocked_runs_that_do_not_look_completed(stack, fanned_out_cycle):
    """Screenshots kept under ARTIFACTS: the summary and handoff artifacts, a Blocked task run, the MLflow runs."""
    _browser_or_skip()
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from tasks.evidence import schema

    cycle = _flow_runs(stack, "week1-cycle")[0]
    with SyncPrefectClient(stack.env["PREFECT_API_URL"]) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[cycle.id])))
    blocked = [t for t in tasks if t.state and t.state.name == "Blocked"]
    assert blocked and all(not t.state.is_completed() for t in blocked)  # the T6 alternatives have no weights
    assert any(t.name.startswith("open-model/") for t in blocked)
    mlflow = MlflowClient(stack.env["MLFLOW_TRACKING_URI"])
    exp = mlflow.get_experiment_by_name("week1-attention-collapse")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    ui, ml = f"http://127.0.0.1:{stack.prefect_port}", f"http://127.0.0.1:{stack.mlflow_port}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})

            def shot(name: str, url: str, wait_for: str | re.Pattern) -> None:
                # "load", not "networkidle": MLflow's UI polls for ever; the text wait below is the real readiness check
                page.goto(url, wait_until="load", timeout=90_000)
                page.get_by_text(wait_for).first.wait_for(timeout=60_000)
                shots[name] = ARTIFACTS / f"{name}.png"
                page.screenshot(path=str(shots[name]), full_page=True)

            # /artifacts/key/<key> lists the versions; the Markdown renders on the latest version's own page
            shot("prefect-ui-summary-artifact", f"{ui}/artifacts/artifact/{_artifact_id(stack, 'summary-week1-attention-collapse')}",
                 "Strength of evidence")
            shot("prefect-ui-handoff-artifact", f"{ui}/artifacts/artifact/{_artifact_id(stack, 'handoff-week1-attention-collapse')}",
                 re.compile("gate arithmetic"))
            assert page.locator("img[src^='data:image/png']").count() >= 1, "the forest plot is embedded"
            shot("prefect-ui-blocked-task-run", f"{ui}/runs/task-run/{blocked[0].id}", "Blocked")
            # the runs table shows each cycle (its action and model runs nest under it); a Blocked run says so by name
            shot("mlflow-experiment-runs", f"{ml}/#/experiments/{exp.experiment_id}/runs", re.compile("cycle "))
            blocked_run = mlflow.search_runs([exp.experiment_id], f"tags.`{schema.STATUS}` = 'Blocked'", max_results=1)[0]
            shot("mlflow-blocked-run", f"{ml}/#/experiments/{exp.experiment_id}/runs/{blocked_run.info.run_id}",
                 re.compile("· Blocked"))
            shot("mlflow-cycle-run", f"{ml}/#/experiments/{exp.experiment_id}/runs/{_cycle_run_id(mlflow, exp)}",
                 re.compile("cycle "))
        finally:
            browser.close()
    for path in shots.values():
        assert path.stat().st_size > 10_000, path


def _artifact_id(stack: Stack, key: str) -> str:
    """The latest version of a keyed artifact (the cycle creates one per run)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with SyncPrefectClient(stack.env["PREFECT_API_URL"]) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                      sort=ArtifactSort.CREATED_DESC, limit=1)
    assert found, f"no artifact with key {key!r}"
    return str(found[0].id)


def _cycle_run_id(mlflow, exp) -> str:
    runs = mlflow.search_runs([exp.experiment_id], "tags.`fa.kind` = 'cycle'", max_results=1,
                              order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id


def _stop_worker(stack: Stack, name: str) -> None:
    proc = next(p for p, log in zip(stack.procs, stack.logs) if log == name)
    tree = _tree(proc.pid)
    _signal_group(proc, signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=20)
    for p in alive:
        p.kill()


def test_fan_out_from_the_only_worker_fails_within_a_minute_naming_the_fix(stack):
    """docs/prefect-server.md with one worker at --limit 1: the cycle holds the only slot its model runs need."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    _stop_worker(stack, "worker-b")  # last test of the module: the two-worker tests above have run
    models = json.dumps(list(MODELS))
    done = stack.run(str(BIN / "prefect"), "deployment", "run", "week1-cycle/week1-cycle", "--param", "fan_out=true",
                     "--param", f"models={models}", "--param", "samples=16")
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1)
    deadline = time.monotonic() + 600
    with SyncPrefectClient(stack.env["PREFECT_API_URL"]) as client:
        while not (flow_run := client.read_flow_run(run_id)).state.is_final():
            assert time.monotonic() < deadline, f"cycle {run_id} still {flow_run.state.name} after 600 s"
            time.sleep(3)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    assert flow_run.state.is_completed(), flow_run.state  # the cycle itself ends, with the diagnostics Failed
    diagnostics = next(t for t in tasks if t.name == "T4 diagnostics")
    assert diagnostics.state.is_failed()
    assert "prefect worker start --pool fusionaudit" in diagnostics.state.message, diagnostics.state.message
    assert (diagnostics.end_time - diagnostics.start_time).total_seconds() < 60
    assert not [r for r in _flow_runs(stack, "diagnose-model") if r.state and not r.state.is_final()], \
        "the stalled model runs are cancelled, not left Late"
