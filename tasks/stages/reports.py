"""The reports and the handoff: rendered from evidence, every citation verified, rendered again with the verdict."""
from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from agents import narrative
from agents.planner import NextPlan, plan_next
from agents.quality_officer import assess
from tasks import evidence
from tasks.actions import Cycle, open_child
from tasks.evidence import schema
from tasks.evidence.cited import footnotes_as_references
from tasks.mission import Mission
from tasks.reporting import views
from tasks.reporting.rendering import make_env


def _plain(value) -> float | None:
    """A logged value, to three significant digits, for the UI's table artifact and the terminal's final table
    (the statistics run named in the artifact's description holds the full value)."""
    if value is None or not isinstance(value.value, (int, float)):
        return None if value is None else value.value
    return float(f"{value.value:.3g}")


def _narrative(view: dict, quality: evidence.RunLog) -> narrative.NarrativeResult | None:
    """Optional prose from a language model (off unless configured); kept only if its numbers check out."""
    if not narrative.enabled() or view["stats_run"] is None:
        return None
    s = view["stats_run"]
    facts = [c for c in (s.m("gates/models_tested"), s.m("gates/models_collapsed"), s.m("imbalance_threshold")) if c]
    result = narrative.write_paragraph(facts, f"In two sentences, state the cycle's decision ({view['decision']}) "
                                              "and how many models were tested and collapsed.")
    quality.tags({schema.NARRATIVE: "accepted" if result.accepted else f"rejected: {result.rejected_reason}"})
    return result


def _next_plan(mission: Mission, cycle: evidence.RunEvidence) -> NextPlan | None:
    """What the planner will do next cycle, from this cycle's evidence (None if the plan cannot be made)."""
    try:
        return plan_next(mission, cycle)
    except ValueError:
        return None


def _chartable_statistics(view: dict) -> None:
    """Each model's statistics copied onto its own diagnostics run (``stats/<metric>/<key>``), so MLflow's run
    comparison charts them across models; the statistics run stays the evidence the reports cite."""
    s = view["stats_run"]
    if s is None:
        return
    for model in view["models"]:
        if model.diag is None:
            continue
        prefix = schema.model_key(model.name, "")
        values = {schema.charted_key(model.name, k): c.value for k, c in s.metrics.items()
                  if k.startswith(prefix) and isinstance(c.value, (int, float))}
        if values:
            evidence.RunLog(model.diag.run_id).log(metrics=values, tags={
                schema.CALL: model.call or "n/a", schema.VERDICT: "collapse" if model.collapsed else "no collapse shown"})


@task(name="reports", task_run_name="reports and handoff", cache_policy=NO_CACHE)
def write_reports(cycle: Cycle) -> dict[str, object]:
    """Render every report from evidence, verify every citation, render again with the verdict."""
    env = make_env()
    # The first screen's strength, blocker and next action: derived from the evidence, logged, then cited.
    first = evidence.read_run(cycle.run_id)
    if schema.DECISION not in first.tags:  # no statistics ran: the gates' answer without evidence, logged so it is cited
        evidence.RunLog(cycle.run_id).tags({schema.DECISION: "NEED_MORE_DATA", schema.RULE: "the statistics did not run"})
        first = evidence.read_run(cycle.run_id)
    next_plan = _next_plan(cycle.mission, first)
    before = views.cycle_view(cycle.mission, first, next_plan=next_plan)
    head = views.headline_of(before)
    _chartable_statistics(before)
    evidence.RunLog(cycle.run_id).log(metrics=head.metrics(), tags=head.tags())
    tree = evidence.read_run(cycle.run_id)
    view = views.cycle_view(cycle.mission, tree, next_plan=next_plan)
    first_pass = assess(views.render_reports(env, view, cycle.report_dir))
    first, checked = first_pass.findings, first_pass.citations_checked
    quality = open_child(cycle, cycle.run_id, "quality-review", {schema.KIND: "quality"})
    verdict = "VERIFIED" if not first else "NOT VERIFIED"
    quality.log(metrics={"citations_checked": checked, "findings": len(first)}, tags={schema.VERDICT: verdict})
    tree = evidence.read_run(cycle.run_id)
    view = views.cycle_view(cycle.mission, tree, quality=tree.child(schema.KIND, "quality"),
                                next_plan=_next_plan(cycle.mission, tree))
    view["narrative"] = _narrative(view, quality)
    paths = views.render_reports(env, view, cycle.report_dir)
    final = assess(paths)
    findings, checked_final = final.findings, final.citations_checked
    if findings:
        verdict = "NOT VERIFIED"
        (cycle.report_dir / "handoff" / "verification_findings.txt").write_text("\n".join(findings) + "\n", encoding="utf-8")
    quality.log(metrics={"citations_checked_final": checked_final, "findings_final": len(findings)},
                tags={schema.VERDICT: verdict} if findings else None)
    for path in paths:
        evidence.RunLog(cycle.run_id).artifact(path, str(path.parent.relative_to(cycle.report_dir)))
    quality.finish()
    handoff = cycle.report_dir / "handoff" / "execution_progress_update.md"
    text = handoff.read_text(encoding="utf-8")
    # the Prefect UI renders no footnotes: its artifacts list each reference's run and key at the end instead
    create_markdown_artifact(markdown=footnotes_as_references(views.first_screen(text)), key=f"summary-{cycle.mission.id}"[:60],
                             description=f"Decision and what blocks a stronger answer, cycle {cycle.cycle_id} "
                                         f"(full handoff: artifact handoff-{cycle.mission.id})")
    create_markdown_artifact(markdown=footnotes_as_references(views.inline_images(text, handoff.parent)),
                             key=f"handoff-{cycle.mission.id}"[:60],
                             description=f"Week-1 handoff of cycle {cycle.cycle_id}")
    summary = cycle.report_dir / "summaries" / "cycle_summary.md"
    create_markdown_artifact(markdown=footnotes_as_references(summary.read_text(encoding="utf-8")),
                             key=f"cycle-summary-{cycle.mission.id}"[:60],
                             description=f"Cycle summary of cycle {cycle.cycle_id}")
    rows = [{"model": m.name + (" (RANDOM-INIT)" if m.random_init else ""), "architecture": m.family or "n/a",
             "status": m.status, "share": _plain(m.stats.get("mean")), "ci95_low": _plain(m.stats.get("ci_low")),
             "ci95_high": _plain(m.stats.get("ci_high")), "p": _plain(m.stats.get("t_p")), "cohen_d": _plain(m.stats.get("cohen_d")),
             "power": _plain(m.stats.get("power")), "call": m.call or "not tested"} for m in view["models"]]
    create_table_artifact(rows, key=f"comparison-{cycle.mission.id}"[:60],
                          description=f"Cross-architecture comparison of cycle {cycle.cycle_id}; evidence: statistics run "
                                      f"{view['stats_run'].run_id if view['stats_run'] else 'n/a'}")
    return {"handoff": str(handoff), "verdict": verdict, "findings": findings, "decision": view["decision"], "models": rows}
