"""The report context, built from MLflow evidence alone, and the reports rendered from it.

Templates receive ``Cited`` values read back from the evidence store, never
in-memory results, and print numbers only through the ``cite`` filter, so each
number in a report carries the place it is logged.
"""
from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from jinja2 import Environment

from tasks.acceptance import CriterionCheck, check_criteria, final_status
from tasks.evidence import RunEvidence, schema
from tasks.evidence.cited import FOOTNOTE_DEF, Cited, used_footnotes
from tasks.logged_decision import logged_decision
from tasks.mission import PRIORITY_ORDER, Mission
from tasks.reporting.headline import Headline, headline

# ------------------------------------------------------------------ the view


@dataclass(kw_only=True)
class OpenedModel:
    """What the run that opened a model (its adapter run) says of it: the columns every model row starts with.

    Keyword-only, so that a row class puts its own positional fields in front (``opened_fields`` fills these).
    """

    status: str = "Not run"
    reason: str = ""
    mitigation: str = ""
    family: str = ""
    status_ev: Cited | None = None  # the run's fa.status tag: a status word in a report is a cited claim


def opened_fields(run: RunEvidence | None) -> dict:
    """``OpenedModel``'s fields from the tags of the run that opened a model; none (so "Not run") without one."""
    if run is None:
        return {}
    tags = run.tags
    return {"status": tags.get(schema.STATUS, "Not run"), "reason": tags.get(schema.REASON, ""),
            "mitigation": tags.get(schema.MITIGATION, ""), "family": tags.get(schema.FAMILY, ""),
            "status_ev": run.t(schema.STATUS)}


@dataclass
class ModelView(OpenedModel):
    name: str
    calibration: bool
    random_init: bool = False
    adapter_run: str = ""
    diag: RunEvidence | None = None
    stats: dict[str, Cited] = field(default_factory=dict)
    stat_text: dict[str, str] = field(default_factory=dict)
    stat_params: dict[str, Cited] = field(default_factory=dict)  # the same params as cited word claims

    @property
    def label(self) -> str:
        return self.name + (" (RANDOM-INIT)" if self.random_init else "") + (" (calibration)" if self.calibration else "")

    call_ev: Cited | None = None     # the statistics' balance call param
    layers_converged: Cited | None = None
    layer_warnings: str = ""
    call: str = ""              # the statistics' label: collapsed / balanced (TOST passed) / not shown to differ / ...
    call_cited: Cited | None = None

    role: str = ""              # subject | calibration | random-init (controls are never counted)
    reliance: dict[str, Cited] = field(default_factory=dict)
    control: dict[str, Cited] = field(default_factory=dict)  # planted, measured (params), passed (metric)
    robust: dict[str, Cited] = field(default_factory=dict)   # baseline robustness: per-baseline share and verdict
    signed: dict[str, Cited] = field(default_factory=dict)   # MM-SHAP signed sums beside the verdict metric

    @property
    def collapsed(self) -> bool:
        """The gates' verdict: collapse with the Holm-corrected p (its own p for a control, which is never counted)."""
        c = self.stats.get("collapsed")
        return bool(c and c.value == 1)

    @property
    def collapsed_ev(self) -> Cited | None:
        """The logged 0/1 verdict the row shows as a cited word."""
        return self.stats.get("collapsed")

    @property
    def p_decided(self) -> Cited | None:
        """The p that decided the verdict: Holm-corrected for a subject, the model's own for a control."""
        holm = self.stats.get("p_holm")
        return holm if holm is not None and holm.value == holm.value else self.stats.get("p")

    @property
    def is_control(self) -> bool:
        return self.role in ("calibration", "random-init")

    @property
    def zero_variance(self) -> bool:
        z = self.reliance.get("zero_variance")
        return bool(z and z.value == 1)


@dataclass
class BlockerView:
    """A model that could not be opened: one line of the handoff's Blockers section."""

    name: str
    action_id: str
    reason: str
    searched: str
    fetch: str              # the command that fetches its weights ("" when the fix is not a download)
    mitigation: str
    run_id: str
    status_ev: Cited | None = None  # the model run's fa.status tag: the word "Blocked" is a cited claim


@dataclass
class ActionView:
    id: str
    title: str
    priority: str
    owner: str
    stage: str
    run: RunEvidence | None
    status: str
    reason: str
    mitigation: str
    checks: list[CriterionCheck]

    @property
    def status_ev(self) -> Cited | None:
        """The logged status this row shows (the quality review's final status, else the stage's), if it agrees."""
        if self.run is None:
            return None
        logged = self.run.t(schema.FINAL_STATUS) or self.run.t(schema.STATUS)
        return logged if logged and logged.value == self.status else None

    def metric(self, key: str) -> Cited | None:
        return self.run.m(key) if self.run else None


def action_views(mission, cycle: RunEvidence) -> list[ActionView]:
    """One row per mission action (any mission kind), in priority order: its run, final status and criteria."""
    checks = check_criteria(mission, cycle)
    actions = []
    for a in sorted(mission.actions, key=lambda a: (PRIORITY_ORDER[a.priority], a.id)):
        run = cycle.child(schema.ACTION_ID, a.id)
        mine = [c for c in checks if c.action_id == a.id]
        stage = run.tags.get(schema.STATUS, "Not run") if run else "Not run"
        actions.append(ActionView(a.id, a.title, a.priority, a.owner, a.stage, run, final_status(stage, mine),
                                  run.tags.get(schema.REASON, "") if run else "", run.tags.get(schema.MITIGATION, "") if run else "", mine))
    return actions


def cycle_view(mission: Mission, cycle: RunEvidence, quality: RunEvidence | None = None, next_plan=None) -> dict:
    """Everything the templates may show, taken from the cycle's run tree.

    ``next_plan`` is the planner's plan for the next cycle (``agents.planner.plan_next`` on the same tree), made
    by the caller: reporting sits below the agents and never imports them.
    """
    actions = action_views(mission, cycle)
    models = _models(mission, cycle)
    stats_run = _action_run(mission, cycle, "statistics")
    counts = {s: sum(1 for a in actions if a.status == s) for s in ("Completed", "Blocked", "Failed", "Not run")}
    gate = logged_decision(mission, cycle)  # the one decision function, on the verdicts the stage logged
    return {
        "mission": mission,
        "cycle": cycle,
        "cycle_id": cycle.tags.get(schema.CYCLE_ID, cycle.run_id),
        "started": datetime.fromtimestamp(cycle.start_time / 1000, tz=timezone.utc).isoformat(timespec="seconds"),
        "actions": actions,
        "counts": counts,
        "models": models,
        "tested": [m for m in models if m.name in gate.tested],
        "excluded": [m for m in models if m.name in gate.controls and m.role == "random-init"],
        "controls": [m for m in models if m.name in gate.controls],
        "gate": gate,
        "blocked_models": [m for m in models if m.status == "Blocked"],
        "blockers": _blockers(mission, cycle),
        "next_plan": next_plan,
        "diag_run": _action_run(mission, cycle, "diagnostics"),
        "skipped_samples": _skipped(_action_run(mission, cycle, "diagnostics")),
        "stats_run": stats_run,
        "pairs": _pairs(stats_run),
        "decision": gate.decision,
        "decision_ev": (stats_run.t(schema.DECISION) if stats_run else None) or cycle.t(schema.DECISION),
        "rule": gate.rule if stats_run else "the statistics did not run",
        "metric": mission.gates.metric,
        "quality": quality,
        "any_random_init": any(m.random_init for m in models),
        "any_calibration": any(m.calibration and m.stats for m in models),
        "narrative": None,  # set by the reports stage when a narrative endpoint is configured
    }


@dataclass
class PairView:
    a: str
    b: str
    run: RunEvidence

    def m(self, key: str) -> Cited | None:
        return self.run.m(schema.pair_key(self.a, self.b, key))


def _pairs(stats_run: RunEvidence | None) -> list[PairView]:
    if stats_run is None:
        return []
    return [PairView(a, b, stats_run) for a, b in schema.pairs_logged(stats_run.metrics)]


def _blockers(mission: Mission, cycle: RunEvidence) -> list[BlockerView]:
    """Every Blocked model of the adapters and alternative-models actions, in mission order."""
    out = []
    for stage in ("adapters", "alternative_models"):
        run = _action_run(mission, cycle, stage)
        for child in (run.children if run else []):
            if child.tags.get(schema.KIND) == "model" and child.tags.get(schema.STATUS) == "Blocked":
                fetch = child.tags.get(schema.FETCH, "none")
                out.append(BlockerView(child.tags.get(schema.MODEL, child.name), run.tags.get(schema.ACTION_ID, ""),
                                       child.tags.get(schema.REASON, ""), child.tags.get(schema.SEARCHED, "see the run's mitigation"),
                                       "" if fetch == "none" else fetch, child.tags.get(schema.MITIGATION, ""), child.run_id,
                                       child.t(schema.STATUS)))
    order = {m.name: i for i, m in enumerate(mission.models + mission.alternatives)}
    return sorted(out, key=lambda b: order.get(b.name, len(order)))


def headline_of(view: dict) -> Headline:
    """The first screen's strength, blocker and action, from a cycle view (logged by the reports stage)."""
    s = view["stats_run"]
    metric = view["metric"]
    cal = s.m(schema.calibration_key(metric, "separates")) if s else None
    failed = [a.id for a in view["actions"] if a.status == "Failed"]
    min_tested = int(s.m("gates/min_models_tested").value) if s and s.m("gates/min_models_tested") else \
        view["mission"].gates.min_models_tested
    return headline(view["models"], min_tested, None if cal is None else cal.value == 1, failed, stats_ran=s is not None)


def _skipped(diag: RunEvidence | None) -> list[dict]:
    """The dataset's skipped samples (corrupt images, empty captions, ...) as logged by the diagnostics run."""
    n = diag.m("dataset_samples_skipped") if diag else None
    if not n or not n.value:
        return []
    from tasks.evidence import read_table

    return read_table(diag.run_id, "dataset_skipped.csv").to_dict("records")


def _action_run(mission: Mission, cycle: RunEvidence, stage: str) -> RunEvidence | None:
    action = mission.for_stage(stage)
    return cycle.child(schema.ACTION_ID, action.id) if action else None


def _models(mission: Mission, cycle: RunEvidence) -> list[ModelView]:
    adapters = _action_run(mission, cycle, "adapters")
    diags = _action_run(mission, cycle, "diagnostics")
    stats_run = _action_run(mission, cycle, "statistics")
    metric = mission.gates.metric
    views = []
    for entry in mission.models:
        opened = adapters.child(schema.MODEL, entry.name) if adapters else None
        view = ModelView(entry.name, entry.calibration, **opened_fields(opened))
        if opened:
            view.random_init = opened.tags.get(schema.RANDOM_INIT) == "true"
            view.adapter_run = opened.run_id
        view.diag = diags.child(schema.MODEL, entry.name) if diags else None
        key = partial(schema.model_key, entry.name)  # key("verdict", "p_holm") -> <model>/verdict/p_holm
        if stats_run and key(metric, "n") in stats_run.metrics:
            # the verdict's fields also unprefixed where the summary has no field of that name (imbalance, p, ...):
            # the summary's CI is the CI of the mean, the verdict's the interval that decided (verdict_ci_*)
            for prefix, into in ((key("verdict", ""), "verdict_"), (key("verdict", ""), ""),
                                 (key(metric, ""), ""), (key("tost", ""), "tost_")):
                view.stats |= {into + k.removeprefix(prefix): v for k, v in stats_run.metrics.items() if k.startswith(prefix)}
                view.stat_text |= {into + k.removeprefix(prefix): v for k, v in stats_run.params.items() if k.startswith(prefix)}
                view.stat_params |= {into + k.removeprefix(prefix): stats_run.p(k) for k in stats_run.params if k.startswith(prefix)}
            view.call = stats_run.params.get(key("call"), "")
            view.call_cited = stats_run.m(schema.call_key(entry.name, view.call))
            view.call_ev = stats_run.p(key("call"))  # the call as a cited word claim
            view.role = stats_run.params.get(key("role"), "")
            view.stat_text["call_reason"] = stats_run.params.get(key("call_reason"), "")
            view.stat_text["direction"] = stats_run.params.get(key("direction"), "")
            for group, into in (("reliance", view.reliance), ("control", view.control), ("robust", view.robust),
                                ("signed", view.signed)):
                prefix = key(group, "")
                into |= {k.removeprefix(prefix): stats_run.m(k) for k in stats_run.metrics if k.startswith(prefix)}
                into |= {k.removeprefix(prefix): stats_run.p(k) for k in stats_run.params if k.startswith(prefix)}
            view.layers_converged = stats_run.m(key("layers", "converged"))
            view.layer_warnings = stats_run.params.get(key("layers", "warnings"), "")
        views.append(view)
    return views


# ------------------------------------------------------------------ rendering


def render_reports(env: Environment, view: dict, report_dir: Path) -> list[Path]:
    """Write the handoff, the cycle summary and one results page per diagnosed model; return the Markdown paths."""
    written = []
    for template, target in (("handoff/execution_progress_update.md.j2", "handoff/execution_progress_update.md"),
                             ("summaries/cycle_summary.md.j2", "summaries/cycle_summary.md")):
        written.append(_write(report_dir / target, env.get_template(template).render(**view)))
    written.append(_write(report_dir / "results" / "statistical_validation_framework.md",
                          env.get_template("results/statistical_validation_framework.md.j2").render(**view)))
    results = env.get_template("results/model_diagnostic_results.md.j2")
    for model in view["models"]:
        if model.diag is not None:
            written.append(_write(report_dir / "results" / f"{model.name}_diagnostic_results.md",
                                  results.render(model=model, **view)))
    return written


_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)")


def inline_images(markdown: str, base: Path) -> str:
    """The report with its relative PNG links as data URIs: the Prefect artifact view has no file next to it."""
    def embed(match: re.Match) -> str:
        path = (base / match.group(2)).resolve()
        if not path.is_file():
            return match.group(0)
        return f"![{match.group(1)}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"

    return _IMAGE.sub(embed, markdown)


def first_screen(markdown: str) -> str:
    """The handoff down to its first detail section (the planning team's one-screen summary), with its footnotes."""
    head = markdown.split("\n## ", 1)[0].rstrip()
    notes = [line for line in markdown.split("\n") if FOOTNOTE_DEF.match(line)]
    return used_footnotes(head + "\n\n" + "\n".join(notes))


def write_pending_actions(plan: list[dict], report_dir: Path) -> Path:
    return _write(report_dir / "handoff" / "pending_actions.json", json.dumps(plan, indent=2) + "\n")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
