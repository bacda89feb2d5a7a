"""``fusionaudit``: run a cycle, read its handoff, verify any report against the evidence."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

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
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _fail(exc: BaseException, debug: bool) -> None:
    from jinja2 import TemplateError

    from tasks.preflight import describe_os_error, describe_template_error

    if debug:
        raise exc
    message = (describe_os_error(exc, exc.filename) if isinstance(exc, OSError) and exc.filename
               else describe_template_error(exc) if isinstance(exc, TemplateError) else str(exc))
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
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
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Run a cycle of the mission's kind (Week-1 diagnosis, training, ...); with --next, cycle N+1 planned from cycle N."""
    from flows.kinds import kind_of
    from tasks.evidence import tracking_uri
    from tasks.mission import MissionError
    from tasks.preflight import run_preflight

    from flows.week1 import DEFAULT_MISSION

    path = str(mission or DEFAULT_MISSION)
    model_list = [m.strip() for m in models.split(",") if m.strip()] if models else None
    try:
        kind = kind_of(path)
        if kind.name != "week1" and (model_list or next_ or fan_out or allow_random_init or bib):
            raise MissionError(f"--models, --next, --fan-out, --allow-random-init and --bib apply to week1 missions; "
                               f"{path} is a {kind.name} mission: drop them (its variants and seeds are in the file)")
        if kind.name == "week1":
            kind.load()(path, model_list, samples)  # fail before anything runs
        else:
            kind.load()(path, samples=samples)
        run_preflight()  # evidence store, Prefect API, disk: fail in seconds, not after retries
        _check_store(tracking_uri())
        if fan_out:
            _check_fan_out()
    except (MissionError, RuntimeError) as exc:
        _fail(exc, debug)
    where = os.environ.get("PREFECT_API_URL") or "Prefect's local API"
    console.print(f"[bold]fusionaudit[/] {kind.name} cycle: mission {path}, evidence {tracking_uri()}, orchestration {where}")
    bibs = [str(b) for b in bib]
    if kind.name != "week1":
        state = kind.flow_fn()(mission_path=path, samples=samples, return_state=True)
    elif next_:
        from flows.cycle import next_cycle

        if model_list:
            _fail(ValueError("--next plans the models from the previous cycle: drop --models"), debug)
        state = next_cycle(mission_path=path, previous_cycle=previous, samples=samples, allow_random_init=allow_random_init,
                           fan_out=fan_out, bib_files=bibs, return_state=True)
    else:
        from flows.week1 import week1_cycle

        state = week1_cycle(mission_path=path, models=model_list, samples=samples, allow_random_init=allow_random_init,
                            bib_files=bibs, fan_out=fan_out, return_state=True)
    if not state.is_completed():
        try:
            state.result()
        except Exception as exc:  # noqa: BLE001 - shown as one message unless --debug
            _fail(exc, debug)
    result = state.result()
    console.print(f"\n[bold]{state.message}[/]")
    console.print(f"Handoff: {result['handoff']}")
    console.print(f"Decision: [bold]{result['decision']}[/]")
    if result["findings"]:
        err.print(f"[red]{len(result['findings'])} verification finding(s)[/], first: {result['findings'][0]}")
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

    from flows.week1 import DEFAULT_MISSION
    from tasks.cycles import list_cycles
    from tasks.mission import MissionError, load_mission

    try:
        mission_id = load_mission(mission or DEFAULT_MISSION).id
    except MissionError as exc:
        _fail(exc, False)
    cycles = list_cycles(mission_id)
    if not cycles:
        console.print(f"no cycles of mission {mission_id} yet: run `fusionaudit cycle run`")
        return
    table = Table(title=f"cycles of {mission_id}")
    for col in ("#", "cycle", "started (UTC)", "status", "actions", "completed", "blocked", "failed", "decision"):
        table.add_column(col)
    show = lambda v: "—" if v is None else str(v)  # noqa: E731
    for c in cycles:
        table.add_row(str(c.number), c.cycle_id, c.started.strftime("%Y-%m-%d %H:%M"), c.status, show(c.actions_total),
                      show(c.actions_completed), show(c.actions_blocked), show(c.actions_failed), c.decision)
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
        adapters.add_row(name, info.family, ", ".join(info.metrics))
    console.print(adapters)
    try:
        m = load_mission(mission or DEFAULT_MISSION)
    except MissionError as exc:
        _fail(exc, False)
    console.print(f"\n[bold]models of mission {m.id}[/] (weights on this machine?)")
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

    root = reports_root() / mission
    cycles = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []
    if not cycles:
        err.print(f"[red]error:[/] no cycles under {root}: run `fusionaudit cycle run` first")
        raise typer.Exit(2)
    chosen = cycle or cycles[-1]
    rel = "handoff/execution_progress_update.md" if which == "handoff" else "summaries/cycle_summary.md"
    path = root / chosen / rel
    if not path.exists():
        err.print(f"[red]error:[/] {path} not found: cycles are {', '.join(cycles)}")
        raise typer.Exit(2)
    console.print(f"[dim]{path}[/]")
    sys.stdout.write(path.read_text(encoding="utf-8"))


@app.command("verify")
def verify(paths: list[Path] = typer.Argument(..., help="Markdown report(s) to check against MLflow")) -> None:
    """Re-read every citation from MLflow; exit 1 on any mismatch or uncited number."""
    from agents.quality_officer import assess

    missing = [p for p in paths if not p.exists()]
    if missing:
        err.print(f"[red]error:[/] not found: {', '.join(map(str, missing))}")
        raise typer.Exit(2)
    result = assess(paths)
    findings, checked = result.findings, result.citations_checked
    for f in findings:
        console.print(f"[red]FINDING[/] {f}")
    console.print(f"{'VERIFIED' if not findings else 'NOT VERIFIED'}: {checked} citation(s) checked, {len(findings)} finding(s)")
    raise typer.Exit(1 if findings else 0)


if __name__ == "__main__":
    app()
