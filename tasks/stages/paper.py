"""T7: the paper drafts (abstract, method, results), filled from the cycle's evidence."""
from __future__ import annotations

import shutil
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from agents.quality_officer import check_text
from tasks import evidence
from tasks.actions import COMPLETED, Cycle, Outcome, action_run, action_task_name
from tasks.evidence import schema
from tasks.mission import Action
from tasks.reporting import paper, views
from tasks.reporting.rendering import make_env
from tasks.stages._common import finish
from tasks.stages.statistics import ANALYSED_METRICS


@task(name="paper", task_run_name=action_task_name, cache_policy=NO_CACHE)
def paper_stage(cycle: Cycle, action: Action, stats_run: str) -> Outcome:
    """The abstract's placeholders filled from the statistics run as read back from MLflow."""
    with action_run(cycle, action) as run:
        ev = evidence.read_run(stats_run, with_children=False)
        facts = paper.abstract_facts(ev, cycle.mission.gates.metric)
        tex, md = paper.render_abstract(None, facts)
        out = cycle.report_dir / "paper"
        out.mkdir(parents=True, exist_ok=True)
        (out / "abstract.tex").write_text(tex, encoding="utf-8")
        (out / "abstract.md").write_text(md, encoding="utf-8")
        runs: dict = {}  # each cited run read once for the three sections
        findings = _paper_sections(cycle, out, runs)
        findings += check_text(md, runs)[0]
        for path in sorted(out.glob("*")):
            if path.name.split(".")[0] in ("abstract", "method", "results"):
                run.artifact(path, "paper")
        run.metrics({"latex_compiled": paper.compile_latex(out)} if shutil.which("pdflatex") else {})
        # p and d belong in the abstract only when a counted model collapsed; otherwise the abstract states that none
        # did (the evidence is the logged count), so those two placeholders are resolved without a number
        collapsed = bool(facts["strongest_model"])
        filled = [facts["n_models_tested"], facts["p_value"] if collapsed else "none collapsed",
                  facts["cohens_d"] if collapsed else "none collapsed", facts["collapsed_models"] or facts["decision"]]
        run.metrics({"placeholders_filled": sum(1 for v in filled if v is not None), "uncited_numbers": len(findings)})
        outcome = Outcome(action.id, COMPLETED, run.run_id)
    return finish(run, outcome)


def _paper_sections(cycle: Cycle, out: Path, runs: dict) -> list:
    """Method (the formulas of the metrics this cycle used) and results (table, forest plot), Markdown and LaTeX,
    from the cycle's evidence; returns the evidence check's findings on the Markdown twins."""
    view = views.cycle_view(cycle.mission, evidence.read_run(cycle.run_id))
    if view["stats_run"] is None:
        return []
    used = {m for m in ANALYSED_METRICS
            if any(schema.model_key(mv.name, m, "mean") in view["stats_run"].metrics for mv in view["models"])}
    used.add(cycle.mission.gates.metric)
    env = paper.with_paper_filters(make_env())
    context = {**view, "s": view["stats_run"], "metrics_used": used, "fa_providecommand": paper.FA_PROVIDECOMMAND}
    findings = []
    for section in ("method", "results"):
        for ext in ("md", "tex"):
            (out / f"{section}.{ext}").write_text(env.get_template(f"paper/{section}.{ext}.j2").render(**context), encoding="utf-8")
        findings += check_text((out / f"{section}.md").read_text(encoding="utf-8"), runs)[0]
    return findings
