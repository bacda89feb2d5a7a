"""Operations Commander: what each action did, read back from its MLflow runs.

An ``ActionReport`` answers the planning team's questions about one action —
what ran (stage, status, reason), on which models and data, which artifacts
it wrote, its key numbers and how long it took — with every number a
``Cited`` value so a template prints it with its evidence.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from agents.quality_officer import CriterionCheck, check_criteria, final_status
from tasks import evidence
from tasks.evidence import FAILED, RunEvidence, schema
from tasks.evidence.cited import Cited
from tasks.mission import PRIORITY_ORDER, Action, Mission
from tasks.reporting.rendering import cite, code

NOT_RUN = "Not run"
# Infrastructure figures every run carries; reported as duration/memory, not as the action's key metrics.
INFRA = ("duration_s", "peak_rss_mb", "peak_gpu_mb")


@dataclass(frozen=True)
class Duration:
    seconds: float
    source: str               # "metric duration_s" or "run start/end times"
    cited: Cited | None = None  # set when the duration is a logged metric


@dataclass(frozen=True)
class Artifact:
    run_id: str
    path: str                 # relative to the run's artifact root

    def __str__(self) -> str:
        return f"{self.run_id}/{self.path}"


@dataclass(frozen=True)
class DataUsed:
    kind: Cited | None = None     # param "dataset"
    hash: Cited | None = None     # param "dataset_hash"
    samples: Cited | None = None  # metric "dataset_samples", else the cycle's param "samples"
    seed: Cited | None = None     # the cycle's param "seed"


@dataclass(frozen=True)
class ModelRunReport:
    name: str
    run_id: str
    status: str
    reason: str
    cached: bool
    metrics: dict[str, Cited]
    duration: Duration | None


@dataclass(frozen=True)
class ActionReport:
    action_id: str
    title: str
    stage: str
    owner: str
    priority: str
    run_id: str | None
    status: str               # what the stage returned (fa.status)
    final_status: str         # after the acceptance criteria (Failed when a criterion missed)
    reason: str
    mitigation: str
    models: list[ModelRunReport] = field(default_factory=list)
    data: DataUsed = field(default_factory=DataUsed)
    artifacts: list[Artifact] = field(default_factory=list)
    metrics: dict[str, Cited] = field(default_factory=dict)
    duration: Duration | None = None
    peak_rss_mb: Cited | None = None
    peak_gpu_mb: Cited | None = None
    criteria: list[CriterionCheck] = field(default_factory=list)
    status_ev: Cited | None = None  # the fa.status tag the stage logged (a cited word claim)

    def to_markdown(self) -> str:
        """A section that passes the evidence check (numbers cited, identifiers in code spans)."""
        lines = [f"### `{self.action_id}` `{self.title}`", ""]
        if self.run_id is None:
            return "\n".join(lines + [f"Stage `{self.stage}`: {NOT_RUN}.", ""])
        returned = f"{self.status_ev.claim()} {self.status_ev.citation}" if self.status_ev else self.status
        head = f"Stage `{self.stage}`, MLflow run `{self.run_id}`: "
        head += returned if self.final_status == self.status else f"{self.final_status} after its criteria (the stage returned {returned})"
        if self.reason:
            head += f"; reason `{_safe(self.reason)}`"
        if self.mitigation:
            head += f"; mitigation `{_safe(self.mitigation)}`"
        lines += [head + ".", ""]
        if self.duration:
            lines.append(f"- Duration: {_cite(self.duration.cited)} s." if self.duration.cited
                         else "- Duration: not logged as a metric (the MLflow run's start and end times bound it).")
        d = self.data
        if d.kind or d.hash or d.samples:
            parts = [f"kind `{d.kind.value}`" if d.kind else None, f"hash `{d.hash.value}`" if d.hash else None,
                     f"samples {_cite(d.samples)}" if d.samples else None, f"seed {_cite(d.seed)}" if d.seed else None]
            lines.append("- Data: " + ", ".join(p for p in parts if p) + ".")
        for key, value in sorted(self.metrics.items()):
            lines.append(f"- `{key}`: {_cite(value)}")
        for m in self.models:
            extra = ", diagnostics reused from cache" if m.cached else ""
            took = f", {_cite(m.duration.cited)} s" if m.duration and m.duration.cited else ""
            why = f": `{_safe(m.reason)}`" if m.reason else ""
            lines.append(f"- Model `{m.name}` (run `{m.run_id}`): {m.status}{extra}{took}{why}")
        for a in self.artifacts:
            lines.append(f"- Artifact `{a}`")
        return "\n".join(lines) + "\n"


def _cite(c: Cited) -> str:
    """A number with its evidence; a logged string (a tag, a param) as code: it is not a measurement."""
    return code(c.value) if isinstance(c.value, str) else cite(c)


def _safe(text: str) -> str:
    """Inside a code span the template writes: one line, no backtick, no pipe (tasks.reporting.markdown.code)."""
    return code(text)[1:-1]


def artifacts(run_id: str, path: str | None = None) -> list[Artifact]:
    """Every file under the run's artifact root (MLflow lists one folder level at a time)."""
    out = []
    for info in evidence.client().list_artifacts(run_id, path):
        if info.is_dir:
            out += artifacts(run_id, info.path)
        else:
            out.append(Artifact(run_id, info.path))
    return out


def duration(run: RunEvidence) -> Duration | None:
    """The ``duration_s`` metric the stage logged; for runs without one, the MLflow start/end times."""
    logged = run.m("duration_s")
    if logged is not None:
        return Duration(float(logged.value), "metric duration_s", logged)
    end = evidence.client().get_run(run.run_id).info.end_time
    if end and run.start_time:
        return Duration((end - run.start_time) / 1000.0, "run start/end times")
    return None


def _key_metrics(run: RunEvidence) -> dict[str, Cited]:
    """The action's own figures: top-level keys (per-layer and per-model keys carry a "/"), infrastructure apart."""
    return {k: v for k, v in run.metrics.items() if "/" not in k and k not in INFRA}


def _data(run: RunEvidence, cycle: RunEvidence) -> DataUsed:
    """The dataset an action used, when it logged one (the cycle run holds the mission's sample size and seed)."""
    if run.p("dataset") is None and run.p("dataset_hash") is None:
        return DataUsed()
    return DataUsed(kind=run.p("dataset") or cycle.p("dataset"), hash=run.p("dataset_hash"),
                    samples=run.m("dataset_samples") or cycle.p("samples"), seed=run.p("seed") or cycle.p("seed"))


def action_report(mission: Mission, action: Action, cycle: RunEvidence) -> ActionReport:
    """One action of the cycle as its evidence shows it; ``Not run`` when the cycle has no run for it."""
    run = cycle.child(schema.ACTION_ID, action.id)
    base = dict(action_id=action.id, title=action.title, stage=action.stage, owner=action.owner, priority=action.priority)
    if run is None:
        return ActionReport(**base, run_id=None, status=NOT_RUN, final_status=NOT_RUN, reason="", mitigation="")
    checks = [c for c in check_criteria(mission, cycle) if c.action_id == action.id]
    status = run.tags.get(schema.STATUS, FAILED)
    models = [ModelRunReport(name=c.tags[schema.MODEL], run_id=c.run_id, status=c.tags.get(schema.STATUS, FAILED),
                             reason=c.tags.get(schema.REASON, ""), cached=c.tags.get(schema.CACHED) == "true",
                             metrics=_key_metrics(c), duration=duration(c))
              for c in run.children if c.tags.get(schema.KIND) == "model" and c.tags.get(schema.MODEL)]
    files = artifacts(run.run_id) + [a for m in models for a in artifacts(m.run_id)]
    return ActionReport(**base, run_id=run.run_id, status=status, final_status=final_status(status, checks),
                        reason=run.tags.get(schema.REASON, ""), mitigation=run.tags.get(schema.MITIGATION, ""),
                        models=models, data=_data(run, cycle), artifacts=files, metrics=_key_metrics(run),
                        duration=duration(run), peak_rss_mb=run.m("peak_rss_mb"), peak_gpu_mb=run.m("peak_gpu_mb"),
                        criteria=checks, status_ev=run.t(schema.STATUS))


def cycle_reports(mission: Mission, cycle: RunEvidence) -> list[ActionReport]:
    """Every action of the mission, in execution priority (HIGH first, then by deadline)."""
    ordered = sorted(mission.actions, key=lambda a: (PRIORITY_ORDER[a.priority], a.deadline_hours, a.id))
    return [action_report(mission, a, cycle) for a in ordered]
