"""``fusionaudit``: run a cycle, read its handoff, verify any report against the evidence."""
from __future__ import annotations

import os
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
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

    from tasks.runtime.preflight import describe_os_error, describe_template_error

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
    verbose: bool = typer.Option(False, "--verbose", help="show Prefect's and MLflow's log lines in the terminal"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="let models whose mission entry sets trust_remote_code: true run the Python code shipped in their local folder (its hash is logged)"),
    device: Optional[str] = typer.Option(None, help="auto (a GPU if any, else CPU), cpu, cuda, cuda:N or mps (overrides the mission)"),
    dtype: Optional[str] = typer.Option(None, help="auto, float32, float16 or bfloat16 (overrides the mission)"),
    batch_size: Optional[int] = typer.Option(None, help="samples per diagnostics batch (overrides the mission)"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Run a cycle of the mission's kind (Week-1 diagnosis, training, probing); with --next, Week-1 cycle N+1 planned from cycle N."""
    from flows.cli_progress import await_local_api, live, quiet_logs, results_table
    from tasks.runtime.local_api import start_local_api
    from tasks.runtime.preflight import PreflightError, check_mlflow

    try:
        check_mlflow()  # the evidence store first, before Prefect and torch are imported: a dead server fails in seconds
    except PreflightError as exc:
        _fail(exc, debug)

    if not verbose:
        quiet_logs()  # before Prefect is imported
    try:
        api = start_local_api()  # boots while the imports below run
    except RuntimeError as exc:  # LocalAPIError: a malformed FUSIONAUDIT_LOCAL_API_LINGER_S
        _fail(exc, debug)
    with console.status("loading fusionaudit (torch, Prefect, MLflow)"):
        from flows.cycle import next_cycle
        from flows.week1 import DEFAULT_MISSION, prepare_mission, stage_count, week1_cycle
        from tasks.evidence import tracking_uri
        from tasks.runtime.preflight import run_preflight
        from tasks.mission import MissionError

    path = str(mission or DEFAULT_MISSION)
    model_list = [m.strip() for m in models.split(",") if m.strip()] if models is not None else None
    if trust_remote_code:  # the second opt-in (the first is the mission's trust_remote_code: true); docs/security.md
        os.environ["FUSIONAUDIT_TRUST_REMOTE_CODE"] = "1"
    if previous is not None and not next_:
        _fail(ValueError(f"--previous {previous} needs --next: add --next to plan from that cycle, or drop --previous"), debug)
    try:
        from flows.kinds import kind_of

        kind = kind_of(path).name
        runtime = {"device": device, "dtype": dtype, "batch_size": batch_size}
    except MissionError as exc:
        _fail(exc, debug)
    try:
        await_local_api(api, console)
    except RuntimeError as exc:  # LocalAPIError: the limit and the way around it
        _fail(exc, debug)
    if kind != "week1":
        _run_kind(kind, path, model_list, samples, allow_random_init, next_ or fan_out or bool(bib), debug)
        return
    try:
        with console.status("checking the mission, the evidence store and the Prefect API"):
            prepared = prepare_mission(path, model_list, samples, runtime)  # fail before anything runs
            run_preflight()  # evidence store, Prefect API, disk: fail in seconds, not after retries
            _check_store(tracking_uri())
            if fan_out:
                _check_fan_out()
    except (MissionError, RuntimeError) as exc:
        _fail(exc, debug)
    where = (api.describe() if api
             else os.environ.get("PREFECT_API_URL") or "Prefect's local API (a temporary server, started now)")
    console.print(f"[bold]fusionaudit[/] Week-1 cycle: mission {escape(path)}")
    console.print(f"  evidence store: [bold]{escape(tracking_uri())}[/]  (browse it: {escape(_mlflow_ui_hint(tracking_uri()))})")
    console.print(f"  orchestration: {escape(where)}")
    bibs = [str(b) for b in bib]
    if next_ and model_list:
        _fail(ValueError("--next plans the models from the previous cycle: drop --models"), debug)
    first = "starting the flow" if os.environ.get("PREFECT_API_URL") else "starting Prefect's local API"
    try:
        with live(console, first, stage_count(prepared)):
            if next_:
                state = next_cycle(mission_path=path, previous_cycle=previous, samples=samples,
                                   allow_random_init=allow_random_init, fan_out=fan_out, bib_files=bibs, runtime=runtime, return_state=True)
            else:
                state = week1_cycle(mission_path=path, models=model_list, samples=samples, allow_random_init=allow_random_init,
                                    bib_files=bibs, fan_out=fan_out, runtime=runtime, return_state=True)
    except RuntimeError as exc:
        if "ephemeral Prefect API server" not in str(exc):
            raise
        limit = os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]
        _fail(RuntimeError(f"Prefect's local API did not start within {limit} s: raise "
                           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start a server (`prefect server start`) "
                           "and set PREFECT_API_URL"), debug)
    _finish_cycle(state, debug, results_table)


def _mlflow_ui_hint(uri: str) -> str:
    """The command that opens this very store in MLflow's UI (a server URI is already browsable)."""
    if uri.startswith(("http://", "https://")):
        return uri
    return f"mlflow ui --backend-store-uri {uri}"


def _finish_cycle(state, debug: bool, table=None) -> None:
    """A finished cycle's state as the CLI shows it: one message on failure, else the table, handoff and decision."""
    if not state.is_completed():
        try:
            state.result()
        except Exception as exc:  # noqa: BLE001 - shown as one message unless --debug
            _fail(exc, debug)
    result = state.result()
    if table is not None:
        console.print(table(result.get("models", [])))
    console.print(f"\n[bold]{escape(state.message or '')}[/]")
    console.print(f"Handoff: {result['handoff']}", markup=False, highlight=False)
    console.print(f"Decision: [bold]{escape(str(result['decision']))}[/]")
    if result["findings"]:
        err.print(f"{len(result['findings'])} verification finding(s), first: {result['findings'][0]}", markup=False, style="red")
        raise typer.Exit(1)


def _run_kind(kind: str, path: str, models: list[str] | None, samples: int | None, allow_random_init: bool,
              week1_only: bool, debug: bool) -> None:
    """A mission of another kind (flows/kinds.py): validate it with its loader, run its flow, print the handoff."""
    from flows.kinds import KINDS
    from tasks.evidence import tracking_uri
    from tasks.mission import MissionError
    from tasks.runtime.preflight import run_preflight

    kwargs = {"mission_path": path, "samples": samples}
    try:
        if week1_only:
            raise MissionError(f"--next, --fan-out and --bib apply to week1 missions; {path} is a {kind} mission: drop them")
        KINDS[kind].load()(path)
        if kind == "probing":
            from flows.probing import prepare_probing_mission

            prepare_probing_mission(path, models, samples)  # the CLI overrides, checked before anything runs
            kwargs |= {"models": models, "allow_random_init": allow_random_init}
        elif models or allow_random_init:
            raise MissionError(f"--models and --allow-random-init apply to week1 and probing missions; {path} is a {kind} "
                               "mission: drop them (its variants and seeds are in the file)")
        run_preflight()
        _check_store(tracking_uri())
    except (MissionError, RuntimeError) as exc:
        _fail(exc, debug)
    from flows.cli_progress import live

    console.print(f"[bold]fusionaudit[/] {kind} cycle: mission {escape(path)}, evidence {escape(tracking_uri())}")
    with live(console, "starting Prefect's local API" if not os.environ.get("PREFECT_API_URL") else "starting the flow", 1):
        state = KINDS[kind].flow_fn()(**kwargs, return_state=True)
    _finish_cycle(state, debug)


def _load_any(path):
    """The mission at ``path`` with its kind's loader (flows/kinds.py)."""
    from flows.kinds import kind_of

    return kind_of(path).load()(path)


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

    from flows.diagnose import DIAGNOSE_DEPLOYMENT

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

    from tasks.mission import MissionError
    from tasks.runtime.paths import DEFAULT_MISSION
    from tasks.runtime.preflight import PreflightError, check_mlflow

    try:
        mission_id = _load_any(mission or DEFAULT_MISSION).id
        check_mlflow()  # seconds, not MLflow's minutes of HTTP retries (and before MLflow is imported)
    except (MissionError, PreflightError) as exc:
        _fail(exc, False)
    from tasks.evidence.cycles import list_cycles

    cycles = list_cycles(mission_id)
    if not cycles:
        console.print(f"no cycles of mission {mission_id} yet: run `fusionaudit cycle run`", markup=False)
        return
    table = Table(title=f"cycles of {mission_id}")
    for col in ("#", "cycle", "started (UTC)", "status", "actions", "completed", "blocked", "failed", "decision"):
        table.add_column(col, overflow="fold", no_wrap=col == "cycle")  # an id is never cut
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

    from tasks.adapters.catalog import describe_all, weights_here
    from tasks.adapters.contract import ModelSpec
    from tasks.mission import MissionError
    from tasks.runtime.paths import DEFAULT_MISSION

    adapters = Table(title="adapters")
    for col in ("adapter", "family", "metrics that apply"):
        adapters.add_column(col, overflow="fold")
    for info in describe_all():
        adapters.add_row(Text(info.name), Text(info.family), Text(", ".join(info.metrics)))
    console.print(adapters)
    try:
        m = _load_any(mission or DEFAULT_MISSION)
    except MissionError as exc:
        _fail(exc, False)
    console.print(f"\nmodels of mission {m.id} (weights on this machine?)", markup=False)
    for entry in m.models + m.alternatives:  # one line each: the paths are long
        found, where = weights_here(ModelSpec(entry.name, entry.adapter, entry.source, entry.arch))
        role = " (alternative)" if entry in m.alternatives else ""
        console.print(f"- {entry.name}{role} [{entry.adapter}, {entry.source}]: weights here: {'yes' if found else 'no'}"
                      f"; looked in: {'; '.join(where) or 'n/a'}", markup=False)


class Which(str, Enum):
    handoff = "handoff"
    summary = "summary"


REPORT_FILES = {Which.handoff: "handoff/execution_progress_update.md", Which.summary: "summaries/cycle_summary.md"}


@report_app.command("show")
def report_show(
    cycle: Optional[str] = typer.Argument(None, help="cycle id (default: the latest finished cycle)"),
    mission: str = typer.Option("week1-attention-collapse", help="mission id"),
    which: Which = typer.Option(Which.handoff, help="which report to show"),
    raw: bool = typer.Option(False, "--raw", help="print the Markdown source instead of rendering it"),
) -> None:
    """Show a cycle's handoff (or cycle summary), rendered; the latest finished cycle by default.

    A cycle is finished when its reports were written (the last stage), so this reads the reports folder only.
    """
    from rich.markdown import Markdown

    from tasks.runtime.paths import reports_root

    # a mission id and a cycle id are names, never paths: nothing outside the reports folder is listed or read
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", mission):
        _fail(ValueError(f"--mission {mission!r} is not a mission id (lowercase letters, digits, '-', '_'): "
                         "pass the id: field of the mission, e.g. week1-attention-collapse"), False)
    if cycle is not None and not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}", cycle):
        _fail(ValueError(f"cycle {cycle!r} is not a cycle id: pass one listed by `fusionaudit cycle list`"), False)
    root = reports_root() / mission
    rel = REPORT_FILES[which]
    folders = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []
    finished = [c for c in folders if (root / c / REPORT_FILES[Which.handoff]).exists()]
    if not finished:
        err.print(f"[red]error:[/] no finished cycle under {escape(str(root))}: run `fusionaudit cycle run` first")
        raise typer.Exit(2)
    chosen = cycle or finished[-1]
    path = root / chosen / rel
    if not path.is_file():
        err.print(f"[red]error:[/] {escape(str(path))} not found: finished cycles are {escape(', '.join(finished))}")
        raise typer.Exit(2)
    console.print(f"{path}", style="dim", markup=False, highlight=False)
    text = path.read_text(encoding="utf-8")
    if raw or not console.is_terminal:  # piped: the Markdown itself, every id and citation whole
        sys.stdout.write(text)
    else:
        console.print(Markdown(text, hyperlinks=False))


@app.command("verify")
def verify(paths: list[Path] = typer.Argument(..., help="Markdown report(s) to check against MLflow")) -> None:
    """Re-read every citation from MLflow; exit 1 on any mismatch or uncited number."""
    from tasks.runtime.preflight import PreflightError, check_mlflow

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


def _plain_type(param) -> str:
    desc = param.type_descriptor
    many = "..." if desc.is_list else ""
    bare = param.bare_type()
    if getattr(param, "is_flag", False) or desc.annotation is bool:
        return ""
    if desc.is_choice:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices or ()) + "]"
    if desc.is_path or "Path" in bare:
        return "PATH" + many
    return next((label for key, label in (("int", "INTEGER"), ("float", "FLOAT")) if key in bare), "TEXT") + many


def _plain_types(command) -> None:
    """Help shows plain types (PATH, INTEGER, TEXT, [handoff|summary]) rather than Python annotations; flags none."""
    for param in command.params:
        if getattr(param, "type_descriptor", None) is None:
            continue
        label = _plain_type(param)
        if param.param_type_name == "argument":
            param.metavar = param.metavar or param.name.upper() + ("..." if param.type_descriptor.is_list else "")
        elif param.metavar is None:
            param.metavar = label
        param.display_type_rich = lambda ctx=None, _label=label: _label  # noqa: B023 - bound per parameter
    help_option = command.get_help_option

    def plain_help(ctx, _make=help_option):
        option = _make(ctx)
        if option is not None:
            option.display_type_rich = lambda ctx=None: ""
        return option

    command.get_help_option = plain_help
    for sub in getattr(command, "commands", {}).values():
        _plain_types(sub)


def main() -> None:
    """The ``fusionaudit`` entry point: the typer app as a click command with plain types in its help."""
    command = typer.main.get_command(app)
    _plain_types(command)
    command()


if __name__ == "__main__":
    main()
