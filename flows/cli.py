"""``fusionaudit``: run a cycle, read its handoff, verify any report against the evidence."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text

from flows import cli_calibrate, cli_stats

app = typer.Typer(help="Measure attention collapse in vision-language models; every number logged as evidence.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
cycle_app = typer.Typer(help="Run research cycles.", no_args_is_help=True)
report_app = typer.Typer(help="Read generated reports.", no_args_is_help=True)
app.add_typer(cycle_app, name="cycle")
app.add_typer(report_app, name="report")
app.add_typer(cli_stats.app, name="stats")
app.add_typer(cli_calibrate.app, name="calibrate")
models_app = typer.Typer(help="Model adapters and weights.", no_args_is_help=True)
app.add_typer(models_app, name="models")
# Prefect's local (ephemeral) API gets 20 s to start by default: too short on a loaded machine. Overridable.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _fail(exc: BaseException, debug: bool) -> None:
    from jinja2 import TemplateError

    from tasks.preflight import describe_os_error, describe_template_error

    if debug:
        raise exc
    message = (describe_os_error(exc, exc.filename) if isinstance(exc, OSError) and exc.filename
               else describe_template_error(exc) if isinstance(exc, TemplateError) else str(exc))
    err.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)  # user text is never markup
    raise typer.Exit(2)


@cycle_app.command("run")
def cycle_run(
    mission: Path = typer.Option(None, help="mission brief (YAML); default: the embedded Week-1 mission"),
    models: Optional[str] = typer.Option(None, help="comma-separated model names of the mission to run"),
    samples: Optional[int] = typer.Option(None, help="dataset size (overrides the mission)"),
    allow_random_init: bool = typer.Option(False, "--allow-random-init", help="run models without weights on random weights (labelled RANDOM-INIT)"),
    bib: list[Path] = typer.Option([], help="extra BibTeX file(s) for the literature review"),
    fan_out: bool = typer.Option(False, "--fan-out", help="diagnose each model as a diagnose-model deployment run (needs a Prefect server and workers)"),
    next_: bool = typer.Option(False, "--next", help="plan this cycle from the mission's latest cycle (or --previous) and run it"),
    previous: Optional[str] = typer.Option(None, help="with --next: the cycle id to plan from (default: the latest finished)"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="let models whose mission entry sets trust_remote_code: true run the Python code shipped in their local folder (its hash is logged)"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Run a Week-1 cycle (or, with --next, cycle N+1 planned from cycle N) and print the handoff's path and decision."""
    from tasks.preflight import PreflightError, check_mlflow

    try:
        check_mlflow()  # the evidence store first, before Prefect and torch are imported: a dead server fails in seconds
    except PreflightError as exc:
        _fail(exc, debug)
    from flows.cycle import next_cycle
    from flows.week1 import DEFAULT_MISSION, prepare_mission, week1_cycle
    from tasks.evidence import tracking_uri
    from tasks.preflight import run_preflight
    from tasks.mission import MissionError

    path = str(mission or DEFAULT_MISSION)
    model_list = [m.strip() for m in models.split(",") if m.strip()] if models is not None else None
    if trust_remote_code:  # the second opt-in (the first is the mission's trust_remote_code: true); docs/security.md
        os.environ["FUSIONAUDIT_TRUST_REMOTE_CODE"] = "1"
    if previous is not None and not next_:
        _fail(ValueError(f"--previous {previous} needs --next: add --next to plan from that cycle, or drop --previous"), debug)
    try:
        prepare_mission(path, model_list, samples)  # fail before anything runs
        run_preflight()  # evidence store, Prefect API, disk: fail in seconds, not after retries
        _check_store(tracking_uri())
        if fan_out:
            _check_fan_out()
    except (MissionError, RuntimeError) as exc:
        _fail(exc, debug)
    where = os.environ.get("PREFECT_API_URL") or "Prefect's local API"
    console.print(Text("fusionaudit", style="bold") + Text(f" Week-1 cycle: mission {path}, evidence {tracking_uri()}, "
                                                           f"orchestration {where}"))
    bibs = [str(b) for b in bib]
    if next_ and model_list:
        _fail(ValueError("--next plans the models from the previous cycle: drop --models"), debug)
    try:
        if next_:
            state = next_cycle(mission_path=path, previous_cycle=previous, samples=samples, allow_random_init=allow_random_init,
                               fan_out=fan_out, bib_files=bibs, return_state=True)
        else:
            state = week1_cycle(mission_path=path, models=model_list, samples=samples, allow_random_init=allow_random_init,
                                bib_files=bibs, fan_out=fan_out, return_state=True)
    except RuntimeError as exc:
        if "ephemeral Prefect API server" not in str(exc):
            raise
        limit = os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]
        _fail(RuntimeError(f"Prefect's local API did not start within {limit} s: raise "
                           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start a server (`prefect server start`) "
                           "and set PREFECT_API_URL"), debug)
    if not state.is_completed():
        try:
            state.result()
        except Exception as exc:  # noqa: BLE001 - shown as one message unless --debug
            _fail(exc, debug)
    result = state.result()
    console.print(f"\n{state.message}", markup=False, style="bold")
    console.print(f"Handoff: {result['handoff']}", markup=False)
    console.print(f"Decision: {result['decision']}", markup=False)
    if result["findings"]:
        err.print(f"{len(result['findings'])} verification finding(s), first: {result['findings'][0]}", markup=False, style="red")
        raise typer.Exit(1)


def _check_store(uri: str) -> None:
    """Fail early with one message when the evidence store cannot be reached."""
    from tasks.evidence import client

    try:
        client().search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"MLflow tracking store {uri} is not reachable ({type(exc).__name__}): "
                           "start the server or unset MLFLOW_TRACKING_URI to use the local SQLite store") from None


def _check_fan_out() -> None:
    """Fan-out needs a Prefect server that has the diagnose-model deployment."""
    from prefect.deployments import run_deployment  # noqa: F401 - fail here if prefect is broken
    from prefect.client.orchestration import get_client

    from tasks.stages import DIAGNOSE_DEPLOYMENT

    if not os.environ.get("PREFECT_API_URL"):
        raise RuntimeError("--fan-out needs a Prefect server: set PREFECT_API_URL and run `fusionaudit deploy` (see docs/prefect-server.md)")
    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(DIAGNOSE_DEPLOYMENT)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"--fan-out: deployment {DIAGNOSE_DEPLOYMENT} not found on {os.environ['PREFECT_API_URL']} "
                           f"({type(exc).__name__}): run `fusionaudit deploy` first") from None


@cycle_app.command("list")
def cycle_list(mission: Path = typer.Option(None, help="mission brief (YAML); default: the embedded Week-1 mission")) -> None:
    """The mission's cycles: id, date, actions, blocked, failed, decision."""
    from rich.table import Table

    from tasks.mission import MissionError, load_mission
    from tasks.paths import DEFAULT_MISSION
    from tasks.preflight import PreflightError, check_mlflow

    try:
        mission_id = load_mission(mission or DEFAULT_MISSION).id
        check_mlflow()  # seconds, not MLflow's minutes of HTTP retries (and before MLflow is imported)
    except (MissionError, PreflightError) as exc:
        _fail(exc, False)
    from tasks.cycles import list_cycles

    cycles = list_cycles(mission_id)
    if not cycles:
        console.print(f"no cycles of mission {mission_id} yet: run `fusionaudit cycle run`", markup=False)
        return
    table = Table(title=f"cycles of {mission_id}")
    for col in ("#", "cycle", "started (UTC)", "status", "actions", "completed", "blocked", "failed", "decision"):
        table.add_column(col)
    show = lambda v: "—" if v is None else str(v)  # noqa: E731
    for c in cycles:
        table.add_row(*map(Text, (str(c.number), c.cycle_id, c.started.strftime("%Y-%m-%d %H:%M"), c.status,
                                  show(c.actions_total), show(c.actions_completed), show(c.actions_blocked),
                                  show(c.actions_failed), c.decision)))
    console.print(table)


@models_app.command("list")
def models_list(mission: Path = typer.Option(None, help="mission brief (YAML); default: the embedded Week-1 mission")) -> None:
    """Every adapter (family, metrics that apply) and every model of the mission (weights on this machine?)."""
    from rich.table import Table

    from flows.week1 import DEFAULT_MISSION
    from tasks.adapters.base import ModelSpec
    from tasks.adapters.catalog import describe, weights_here
    from tasks.adapters.registry import available
    from tasks.mission import MissionError, load_mission

    adapters = Table(title="adapters")
    for col in ("adapter", "family", "metrics that apply"):
        adapters.add_column(col, overflow="fold")
    for name in sorted(available()):
        info = describe(name)
        adapters.add_row(Text(name), Text(info.family), Text(", ".join(info.metrics)))
    console.print(adapters)
    try:
        m = load_mission(mission or DEFAULT_MISSION)
    except MissionError as exc:
        _fail(exc, False)
    console.print(f"\nmodels of mission {m.id} (weights on this machine?)", markup=False)
    for entry in m.models + m.alternatives:  # one line each: the paths are long
        found, where = weights_here(ModelSpec(entry.name, entry.adapter, entry.source, entry.arch))
        role = " (alternative)" if entry in m.alternatives else ""
        console.print(f"- {entry.name}{role} [{entry.adapter}, {entry.source}]: weights here: {'yes' if found else 'no'}"
                      f"; looked in: {'; '.join(where) or 'n/a'}", markup=False)


@report_app.command("show")
def report_show(
    cycle: Optional[str] = typer.Argument(None, help="cycle id (default: the latest)"),
    mission: str = typer.Option("week1-attention-collapse", help="mission id"),
    which: str = typer.Option("handoff", help="handoff | summary"),
) -> None:
    """Print a cycle's handoff (or cycle summary)."""
    from tasks.paths import reports_root

    # a mission id and a cycle id are names, never paths: nothing outside the reports folder is listed or read
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", mission):
        _fail(ValueError(f"--mission {mission!r} is not a mission id (lowercase letters, digits, '-', '_'): "
                         "pass the id: field of the mission, e.g. week1-attention-collapse"), False)
    if cycle is not None and not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}", cycle):
        _fail(ValueError(f"cycle {cycle!r} is not a cycle id: pass one listed by `fusionaudit cycle list`"), False)
    root = reports_root() / mission
    cycles = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not cycles:
        _fail(ValueError(f"no cycles under {root}: run `fusionaudit cycle run` first"), False)
    chosen = cycle or cycles[-1]
    rel = "handoff/execution_progress_update.md" if which == "handoff" else "summaries/cycle_summary.md"
    path = root / chosen / rel
    if not path.is_file():
        _fail(ValueError(f"{path} not found: cycles are {', '.join(cycles)}"), False)
    console.print(str(path), markup=False, style="dim")
    sys.stdout.write(path.read_text(encoding="utf-8"))


@app.command("verify")
def verify(paths: list[Path] = typer.Argument(..., help="Markdown report(s) to check against MLflow")) -> None:
    """Re-read every citation from MLflow; exit 1 on any mismatch or uncited number."""
    from tasks.preflight import PreflightError, check_mlflow

    missing = [p for p in paths if not p.exists()]
    if missing:
        _fail(ValueError(f"not found: {', '.join(map(str, missing))}: pass the path of a Markdown report"), False)
    special = [p for p in paths if not p.is_file()]
    if special:  # a folder, a pipe or a device: reading a FIFO would block forever
        _fail(ValueError(f"not a regular file: {', '.join(map(str, special))}: pass the path of a Markdown report"), False)
    try:
        check_mlflow()  # seconds, not MLflow's minutes of HTTP retries per citation (and before MLflow is imported)
    except PreflightError as exc:
        _fail(exc, False)
    from agents.quality_officer import assess

    result = assess(paths)
    findings, checked = result.findings, result.citations_checked
    for f in findings:
        console.print(Text("FINDING ", style="red") + Text(f))
    console.print(f"{'VERIFIED' if result.verified else 'NOT VERIFIED'}: {checked} citation(s) checked, {len(findings)} finding(s)",
                  markup=False)
    raise typer.Exit(0 if result.verified else 1)


if __name__ == "__main__":
    app()
