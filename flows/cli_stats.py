"""``fusionaudit stats``: the statistical framework on a scores table, from the command line.

Mounted by the main CLI as a sub-app (``app.add_typer(cli_stats.app, name="stats")``);
also runnable alone: ``python -m flows.cli_stats summarize scores.csv``.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="Statistics of a scores table (CSV columns model, sample_id, metric, value).",
                  no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def _stats() -> None:
    """Statistics of a scores table (CSV columns model, sample_id, metric, value)."""
    # A callback keeps "summarize" a sub-command even while it is the only one.


def _consoles() -> tuple[Console, Console]:
    # Made per call so they write to the streams of this invocation. Off a
    # terminal (pipes, files, tests) Rich would squeeze the 10-column table
    # into 80 columns; use a wide page unless COLUMNS says otherwise.
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
    return Console(soft_wrap=True, width=width), Console(stderr=True, soft_wrap=True)


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return "<1e-300" if p == 0 else f"{p:.3g}"


def _num(x: float, fmt: str = ".3f") -> str:
    return format(x, fmt) if math.isfinite(x) else "n/a"


def _ci(lo: float, hi: float) -> str:
    return f"[{_num(lo)}, {_num(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else "n/a"


def _verdict(label: str, dominant: str) -> str:
    return f"{label} ({dominant})" if label in ("collapsed", "imbalanced", "per-sample dominance") and dominant != "none" else label


@app.command("summarize")
def summarize(
    scores: Path = typer.Argument(..., help="scores CSV: columns model, sample_id, metric, value (others ignored)"),
    baseline: float = typer.Option(0.5, help="balanced value of the share"),
    margin: float = typer.Option(0.05, help="TOST equivalence margin: 'balanced' means within baseline ± margin"),
    alpha: float = typer.Option(0.05, help="test level (also for Holm and TOST)"),
    threshold: float = typer.Option(0.80, help="collapse threshold on the imbalance max(s, 1 - s)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the per-model and pairwise results here"),
    resamples: int = typer.Option(9999, "--resamples", help="bootstrap / permutation resamples"),
    seed: int = typer.Option(0, help="seed of the resampling"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write a forest plot (PNG) here"),
) -> None:
    """Per-model summaries and verdicts, and Holm-corrected pairwise comparisons."""
    from tasks.stats.analysis import analyze
    from tasks.stats.table import ScoresTableError, load_scores

    out, err = _consoles()
    try:
        table = load_scores(scores)
        result = analyze(table, baseline=baseline, margin=margin, alpha=alpha, threshold=threshold,
                         n_resamples=resamples, seed=seed)
    except (ScoresTableError, ValueError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2)

    per_model = Table(title=f"Per model: {escape(str(scores))} (tests against {baseline:g})")
    for name in ("model", "metric", "n", "mean", "CI95 (BCa)", "p (t)", "p (Wilcoxon)", "d", "power", "verdict"):
        per_model.add_column(name, justify="right" if name in ("n", "mean", "p (t)", "p (Wilcoxon)", "d", "power") else "left")
    for r in result.per_model:
        s = r.summary
        per_model.add_row(escape(r.model), escape(r.metric), str(s.n), _num(s.mean), _ci(s.ci_low, s.ci_high),
                          _p(s.t_p), _p(s.wilcoxon_p), _num(s.cohen_d, ".2f"), _num(s.power, ".2f"),
                          _verdict(r.call.label, r.call.dominant))
    out.print(per_model)
    out.print(f"verdicts: collapsed = imbalance > {threshold:g}, the deciding test's p (t-test; exact sign test when the "
              f"share is the same on every sample), Holm-corrected across the models of a metric, < {alpha:g}, and the "
              f"CI at {1 - alpha:g} beyond the threshold; per-sample dominance = most samples beyond the threshold "
              f"(exact binomial); balanced = TOST within {baseline:g} ± {margin:g} and per-sample imbalance within the "
              "margin; 'not shown to differ' is not evidence of balance")

    if result.pairwise:
        pairs = Table(title="Pairwise (paired on common sample_ids; difference = A - B)")
        for name in ("metric", "A", "B", "n", "mean diff", "CI95 (BCa)", "p (t)", "p Holm", "p (Wilcoxon)",
                     "p (perm)", "result"):
            pairs.add_column(name, justify="right" if name.startswith(("n", "mean", "p ")) else "left")
        for r in result.pairwise:
            c = r.comparison
            pairs.add_row(escape(r.metric), escape(r.model_a), escape(r.model_b), str(c.n), _num(c.mean_diff),
                          _ci(c.ci_low, c.ci_high), _p(c.t_p), _p(r.p_holm), _p(c.wilcoxon_p), _p(c.perm_p),
                          escape(r.label))
        out.print(pairs)
        out.print(f"p Holm: {result.correction}, across the family of {result.family_size} pairwise comparison(s) "
                  f"({result.family}); result at alpha {alpha:g}")
    else:
        out.print("pairwise: fewer than two models per metric, nothing to compare")
    for note in result.notes:
        out.print(f"[yellow]note:[/] {escape(note)}")

    try:
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(result.to_json_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
            out.print(f"JSON: {escape(str(json_out))}")
        if plot is not None:
            from tasks.stats.figures import forest_plot

            forest_plot(result.per_model_frame(), threshold, baseline, plot)
            out.print(f"forest plot: {escape(str(plot))}")
    except OSError as exc:
        err.print(f"[bold red]error:[/] cannot write {escape(str(exc.filename or ''))}: {escape(exc.strerror or str(exc))}; "
                  "fix: choose a writable path")
        raise typer.Exit(2)


if __name__ == "__main__":
    app()
