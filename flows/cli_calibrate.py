"""``fusionaudit calibrate``: prove each metric on the calibration zoo and print what separates it.

Mount it with ``app.add_typer(cli_calibrate.app, name="calibrate")`` (the command is the
sub-app's callback, so ``fusionaudit calibrate --samples 32`` needs no sub-command name), or
register the function itself: ``app.command("calibrate")(cli_calibrate.calibrate)``.
Also runnable alone: ``python -m flows.cli_calibrate --samples 32``.
"""
from __future__ import annotations

import math

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(pretty_exceptions_enable=False)


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--{option} {text!r}: give comma-separated integers, e.g. --{option} 0,1,2") from None
    if not values:
        raise ValueError(f"--{option} {text!r} is empty: give comma-separated integers, e.g. --{option} 0,1,2")
    return values


def _fail(err: Console, exc: BaseException, debug: bool) -> None:
    if debug:
        raise exc
    err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(2)


def _share(x: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) else "n/a"


@app.callback(invoke_without_command=True)
def calibrate(
    samples: int = typer.Option(64, help="synthetic samples per zoo model"),
    seeds: str = typer.Option("0,1,2", help="comma-separated zoo training seeds"),
    permutations: str = typer.Option("2,4,8,16,32", help="MM-SHAP permutation counts for the Monte-Carlo error study"),
    verbose: bool = typer.Option(False, "--verbose", help="show Prefect's and MLflow's log lines in the terminal"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Calibrate every metric on the zoo: train/load it per seed, run every metric, write and verify the report."""
    from flows.cli_progress import await_local_api, live, quiet_logs
    from tasks.runtime.local_api import start_local_api

    out, err = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)
    if not verbose:
        quiet_logs()  # before Prefect is imported
    try:
        seed_list, perm_list = _ints(seeds, "seeds"), _ints(permutations, "permutations")
        api = start_local_api()  # boots while the imports below run
        with out.status("loading fusionaudit (torch, Prefect, MLflow)"):
            from flows.calibrate import calibrate as calibrate_flow, check_args
            from tasks.adapters.zoo.calibration import VARIANTS

        check_args(samples, seed_list, perm_list)  # fail before Prefect starts
        await_local_api(api, out)
        with live(out, "starting the flow", len(seed_list) * len(VARIANTS) + 3):
            state = calibrate_flow(samples=samples, seeds=seed_list, permutations=perm_list, return_state=True)
        result = state.result()  # raises the flow's error
    except Exception as exc:  # noqa: BLE001 - one message (exit 2) unless --debug
        _fail(err, exc, debug)
    table = Table(title="metric calibration over the zoo")
    for col in ("metric", "sensitivity", "specificity", "separates", "wrong way"):
        table.add_column(col)
    for row in result["scores"]:
        table.add_row(row["metric"], _share(row["sensitivity"]), _share(row["specificity"]),
                      "yes" if row["separates"] else "no", "yes" if row["wrong_way"] else "no")
    out.print(table)
    out.print(f"Report: {result['report']}")
    if not result["verified"]:
        err.print(f"[red]report NOT VERIFIED[/]: {len(result['findings'])} finding(s), first: {escape(result['findings'][0])}")
        raise typer.Exit(1)
    out.print(f"VERIFIED: {result['citations_checked']} citation(s) checked")


if __name__ == "__main__":
    app()
