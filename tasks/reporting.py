"""Jinja environment and the report context, built from MLflow evidence alone.

Templates receive ``Cited`` values read back from the evidence store, never
in-memory results, and print numbers only through the ``cite`` filter, so each
number in a report carries the place it is logged.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, Undefined, pass_context

from agents.planner import NextPlan, plan_next
from agents.quality_officer import CriterionCheck, check_criteria, final_status
from tasks.cited import FLAG_WORDS, Cited, flag_word, format_word, to_footnotes
from tasks.evidence import RunEvidence
from tasks.markdown import Markdown, code, md_text
from tasks.mission import PRIORITY_ORDER, Mission

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def cite(value: Cited | None) -> Markdown:
    """``0.012 [run_id:key]`` (a footnote once rendered), ``**GO** [run:tags/fa.decision]`` for a word; n/a if not logged."""
    if value is None:
        return Markdown("n/a")
    return Markdown(f"{value.claim()} {value.citation}")


def cite_flag(value: Cited | None, yes: str = "yes", no: str = "no") -> Markdown:
    """A 0/1 metric as a cited word claim, ``**yes**`` / ``**no**`` (or another pair of ``cited.FLAG_WORDS``)."""
    if value is None:
        return Markdown("n/a")
    word = yes if flag_word(value.value) == "yes" else no
    if word not in FLAG_WORDS[int(value.value)]:
        raise ValueError(f"{word!r} is not a word the verifier reads for {value.value}: add it to tasks.cited.FLAG_WORDS")
    return Markdown(f"{format_word(word)} {value.citation}")


@pass_context
def _finalize(context, value: object) -> object:
    """Autoescape for Markdown reports: every ``{{ ... }}`` that is not a filter's Markdown is escaped."""
    if isinstance(value, Markdown) or not str(context.name or "").endswith(".md.j2") or isinstance(value, Undefined):
        return value
    if str(context.name).startswith("paper/"):  # the paper drafts escape their own text (tasks/paper.py)
        return value
    return md_text(value)


class _FootnotedTemplate(Template):
    """A rendered Markdown report carries its citations as footnotes (``tasks.cited.to_footnotes``)."""

    def render(self, *args, **kwargs) -> str:
        text = super().render(*args, **kwargs)
        return to_footnotes(text) if str(self.name or "").endswith(".md.j2") else text


def make_env() -> Environment:
    from tasks.paper import cite_md, cite_tex

    env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, autoescape=False,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, finalize=_finalize)
    env.template_class = _FootnotedTemplate
    env.filters.update(cite=cite, cite_flag=cite_flag, code=code, text=md_text, cite_md=cite_md, cite_tex=cite_tex)
    return env


# ------------------------------------------------------------------ the view


@dataclass
class ModelView:
    name: str
    calibration: bool
    status: str
    reason: str = ""
    mitigation: str = ""
    family: str = ""
    random_init: bool = False
    adapter_run: str = ""
    diag: RunEvidence | None = None
    stats: dict[str, Cited] = field(default_factory=dict)
    stat_text: dict[str, str] = field(default_factory=dict)
    stat_params: dict[str, Cited] = field(default_factory=dict)  # the same params as cited word claims

    @property
    def label(self) -> str:
        return self.name + (" (RANDOM-INIT)" if self.random_init else "") + (" (calibration)" if self.calibration else "")

    status_ev: Cited | None = None   # the adapter run's fa.status tag
    call_ev: Cited | None = None     # the statistics' balance call param
    layers_converged: Cited | None = None
    layer_warnings: str = ""
    call: str = ""              # the statistics' label: collapsed / balanced (TOST passed) / not shown to differ / ...

    @property
    def collapsed(self) -> bool:
        """The gates' verdict: collapse with the Holm-corrected p (uncorrected for models the gates do not count)."""
        c = self.collapsed_ev
        return bool(c and c.value == 1)

    @property
    def collapsed_ev(self) -> Cited | None:
        return self.stats.get("collapsed_holm", self.stats.get("collapsed"))


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
        logged = self.run.t("fa.final_status") or self.run.t("fa.status")
        return logged if logged and logged.value == self.status else None

    def metric(self, key: str) -> Cited | None:
        return self.run.m(key) if self.run else None


def cycle_view(mission: Mission, cycle: RunEvidence, quality: RunEvidence | None = None) -> dict:
    """Everything the templates may show, taken from the cycle's run tree."""
    checks = check_criteria(mission, cycle)
    actions = []
    for a in sorted(mission.actions, key=lambda a: (PRIORITY_ORDER[a.priority], a.id)):
        run = cycle.child("fa.action_id", a.id)
        mine = [c for c in checks if c.action_id == a.id]
        stage = run.tags.get("fa.status", "Not run") if run else "Not run"
        actions.append(ActionView(a.id, a.title, a.priority, a.owner, a.stage, run, final_status(stage, mine),
                                  run.tags.get("fa.reason", "") if run else "", run.tags.get("fa.mitigation", "") if run else "", mine))
    models = _models(mission, cycle)
    stats_run = _action_run(mission, cycle, "statistics")
    counts = {s: sum(1 for a in actions if a.status == s) for s in ("Completed", "Blocked", "Failed", "Not run")}
    return {
        "mission": mission,
        "cycle": cycle,
        "cycle_id": cycle.tags.get("fa.cycle_id", cycle.run_id),
        "started": datetime.fromtimestamp(cycle.start_time / 1000, tz=timezone.utc).isoformat(timespec="seconds"),
        "actions": actions,
        "counts": counts,
        "models": models,
        "tested": [m for m in models if stats_run and m.name in stats_run.tags.get("fa.tested", "").split(",")],
        "excluded": [m for m in models if stats_run and m.name in stats_run.tags.get("fa.excluded", "").split(",")],
        "blocked_models": [m for m in models if m.status == "Blocked"],
        "next_plan": _next_plan(mission, cycle),
        "diag_run": _action_run(mission, cycle, "diagnostics"),
        "skipped_samples": _skipped(_action_run(mission, cycle, "diagnostics")),
        "stats_run": stats_run,
        "pairs": _pairs(stats_run),
        "decision": stats_run.tags.get("fa.decision", "NEED_MORE_DATA") if stats_run else "NEED_MORE_DATA",
        "decision_ev": (stats_run.t("fa.decision") if stats_run else None) or cycle.t("fa.decision"),
        "rule": stats_run.tags.get("fa.rule", "the statistics did not run") if stats_run else "the statistics did not run",
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
        return self.run.m(f"pairs/{self.a}_vs_{self.b}/{key}")


def _pairs(stats_run: RunEvidence | None) -> list[PairView]:
    if stats_run is None:
        return []
    names = sorted({k.split("/")[1] for k in stats_run.metrics if k.startswith("pairs/")})
    return [PairView(*n.split("_vs_", 1), stats_run) for n in names]


def _skipped(diag: RunEvidence | None) -> list[dict]:
    """The dataset's skipped samples (corrupt images, empty captions, ...) as logged by the diagnostics run."""
    n = diag.m("dataset_samples_skipped") if diag else None
    if not n or not n.value:
        return []
    from tasks.evidence import read_table

    return read_table(diag.run_id, "dataset_skipped.csv").to_dict("records")


def _next_plan(mission: Mission, cycle: RunEvidence) -> NextPlan | None:
    """What the planner will do next cycle, from this cycle's evidence (None if the plan cannot be made)."""
    try:
        return plan_next(mission, cycle)
    except ValueError:
        return None


def _action_run(mission: Mission, cycle: RunEvidence, stage: str) -> RunEvidence | None:
    action = mission.for_stage(stage)
    return cycle.child("fa.action_id", action.id) if action else None


def _models(mission: Mission, cycle: RunEvidence) -> list[ModelView]:
    adapters = _action_run(mission, cycle, "adapters")
    diags = _action_run(mission, cycle, "diagnostics")
    stats_run = _action_run(mission, cycle, "statistics")
    metric = mission.gates.metric
    views = []
    for entry in mission.models:
        opened = adapters.child("fa.model", entry.name) if adapters else None
        view = ModelView(entry.name, entry.calibration, opened.tags.get("fa.status", "Not run") if opened else "Not run")
        if opened:
            view.reason, view.mitigation = opened.tags.get("fa.reason", ""), opened.tags.get("fa.mitigation", "")
            view.family = opened.tags.get("fa.family", "")
            view.random_init = opened.tags.get("fa.random_init") == "true"
            view.adapter_run = opened.run_id
            view.status_ev = opened.t("fa.status")
        view.diag = diags.child("fa.model", entry.name) if diags else None
        if stats_run and f"{entry.name}/{metric}/n" in stats_run.metrics:
            for prefix, into in ((f"{entry.name}/{metric}/", ""), (f"{entry.name}/verdict/", ""), (f"{entry.name}/tost/", "tost_")):
                view.stats |= {into + k.removeprefix(prefix): v for k, v in stats_run.metrics.items() if k.startswith(prefix)}
                view.stat_text |= {into + k.removeprefix(prefix): v for k, v in stats_run.params.items() if k.startswith(prefix)}
                view.stat_params |= {into + k.removeprefix(prefix): stats_run.p(k) for k in stats_run.params if k.startswith(prefix)}
            view.call = stats_run.params.get(f"{entry.name}/call", "")
            view.call_ev = stats_run.p(f"{entry.name}/call")
            view.layers_converged = stats_run.m(f"{entry.name}/layers/converged")
            view.layer_warnings = stats_run.params.get(f"{entry.name}/layers/warnings", "")
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


def write_pending_actions(plan: list[dict], report_dir: Path) -> Path:
    return _write(report_dir / "handoff" / "pending_actions.json", json.dumps(plan, indent=2) + "\n")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
