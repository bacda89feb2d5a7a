"""Planning team: the mission's actions as a prioritised plan, and the next cycle's plan from the last one's evidence.

``plan_next`` is a deterministic policy over a cycle's MLflow evidence:

- the GO / PIVOT / NEED_MORE_DATA decision is ``tasks.stats.gates.decide`` on the
  per-model verdicts the previous cycle's statistics stage logged (the same
  function the stage and the reports call, so all three agree);
- every Blocked model is replaced by its mission alternatives not yet tried;
- a Failed action is retried once; one that failed in two consecutive cycles
  is escalated (listed with its error) instead of being retried again.

What it reads from the previous cycle run (and its children), by the names of ``tasks.evidence.schema``:
  cycle run        tags ``CYCLE_ID``, ``CYCLE_NUMBER`` (default 1),
                   ``failures_tag(action_id)`` (consecutive failed cycles before it, default 0);
                   param ``models``
  action runs      tags ``ACTION_ID``, ``STATUS``, ``REASON``; metrics named by acceptance criteria
  model runs       children of any action run: tags ``KIND`` = model, ``MODEL``, ``STATUS``, ``REASON``
  statistics run   metrics ``<model>/<gates.metric>/n``, ``<model>/verdict/collapsed`` (Holm-corrected for
                   subjects), ``<model>/control/passed``; params ``<model>/role``, ``<model>/architecture``;
                   tag ``BLOCKED_MODELS`` (external models not tested)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import partial

from agents.quality_officer import check_criteria, final_status
from tasks.evidence import BLOCKED, COMPLETED, FAILED, RunEvidence, schema
from tasks.evidence.cited import Cited, reference
from tasks.logged_decision import logged_decision
from tasks.mission import PRIORITY_ORDER, Action, Mission, ModelEntry
from tasks.reporting.markdown import Markdown
from tasks.reporting.rendering import cite, code
from tasks.stats import per_model
from tasks.stats.gates import GateResult

ESCALATE_AFTER = 2  # consecutive failed cycles before an action goes to people instead of another retry


def pending_actions(mission: Mission, cycle_start: datetime) -> list[dict]:
    """The plan this cycle executes, in execution priority (HIGH first, then by deadline)."""
    return [_entry(a, cycle_start) for a in _ordered(mission)]


def _ordered(mission: Mission) -> list[Action]:
    return sorted(mission.actions, key=lambda a: (PRIORITY_ORDER[a.priority], a.deadline_hours, a.id))


def _entry(a: Action, cycle_start: datetime | None) -> dict:
    deadline = ((cycle_start + timedelta(hours=a.deadline_hours)).isoformat(timespec="minutes") if cycle_start
                else f"cycle start + {a.deadline_hours} h")
    return {
        "id": a.id, "title": a.title, "priority": a.priority, "owner": a.owner, "stage": a.stage,
        "deadline": deadline, "deadline_hours": a.deadline_hours, "depends_on": list(a.depends_on),
        "acceptance": [{"description": c.description, "check": str(c)} for c in a.acceptance],
    }


# ------------------------------------------------------------------ the next cycle's plan


@dataclass(frozen=True)
class Change:
    """One thing the next plan does differently, and the evidence it rests on.

    ``text`` is Markdown that passes the evidence check: numbers carry their
    ``[run_id:key]`` citation, identifiers and tag values sit in code spans.
    ``evidence`` lists ``run_id:key`` references (``tags/<name>`` for a tag).
    """

    text: str
    evidence: tuple[str, ...]
    kind: str = "plan"      # "verdict": a per-model verdict re-read (the handoff shows those above, not here)

    def __str__(self) -> str:
        return self.text

    @property
    def markdown(self) -> Markdown:
        """The text as Markdown the planner wrote (user text in it is already in code spans)."""
        return Markdown(self.text)


@dataclass(frozen=True)
class Escalation:
    action_id: str
    owner: str
    error: str
    failed_cycles: int
    evidence: str  # run_id:tags/fa.status of the last failed run


@dataclass(frozen=True)
class NextPlan:
    mission: Mission
    decision: GateResult
    changes: list[Change]
    cycle_number: int
    previous_run_id: str
    substitutions: dict[str, list[str]] = field(default_factory=dict)  # blocked model → alternatives now in the plan
    retried: dict[str, str] = field(default_factory=dict)              # action id → why it is retried
    escalated: list[Escalation] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)             # action id → consecutive failed cycles so far

    def actions(self, cycle_start: datetime | None = None) -> list[dict]:
        """pending_actions.json entries: the existing fields plus what the planner decided for each action."""
        escalated = {e.action_id: e for e in self.escalated}
        out = []
        for a in _ordered(self.mission):
            entry = _entry(a, cycle_start)
            failures = self.failures.get(a.id, 0)
            entry["attempt"] = failures + 1
            entry["consecutive_failures"] = failures
            if a.id in escalated:
                e = escalated[a.id]
                entry["plan"] = "escalated"
                entry["escalation"] = {"to": "planning_team", "owner": e.owner, "error": e.error,
                                       "failed_cycles": e.failed_cycles, "evidence": e.evidence}
            elif a.id in self.retried:
                entry["plan"] = "retry"
                entry["retry_reason"] = self.retried[a.id]
            else:
                entry["plan"] = "run"
            out.append(entry)
        return out

    def to_json(self, cycle_start: datetime | None = None) -> str:
        return json.dumps(self.actions(cycle_start), indent=2) + "\n"

    def cycle_tags(self) -> dict[str, str]:
        """Tags the next cycle run must carry so the plan after it can count consecutive failures."""
        return {schema.CYCLE_NUMBER: str(self.cycle_number), schema.PREVIOUS_CYCLE_RUN: self.previous_run_id,
                schema.ESCALATED: ",".join(e.action_id for e in self.escalated) or "none",
                **{schema.failures_tag(a): str(n) for a, n in sorted(self.failures.items())}}


def plan_next(mission: Mission, previous: RunEvidence) -> NextPlan:
    """The next cycle's plan from the previous cycle's evidence (see the module docstring for what is read)."""
    changes: list[Change] = []
    decision = _decision(mission, previous, changes)
    models, alternatives, subs = _models(mission, previous, changes)
    failures, retried, escalated = _actions(mission, previous, changes)
    try:
        next_mission = Mission.model_validate(mission.model_dump() | {"models": models, "alternatives": alternatives})
    except ValueError as exc:
        raise ValueError(f"plan_next: the next mission for {mission.id!r} does not validate ({exc}): "
                         "check the models' alternatives in the mission file") from exc
    return NextPlan(next_mission, decision, changes, _int_tag(previous, schema.CYCLE_NUMBER, 1) + 1, previous.run_id,
                    subs, retried, escalated, failures)


def _int_tag(run: RunEvidence, key: str, default: int) -> int:
    try:
        return int(run.tags.get(key, default))
    except ValueError:
        return default


def _action_run(mission: Mission, cycle: RunEvidence, stage: str) -> RunEvidence | None:
    action = mission.for_stage(stage)
    return cycle.child(schema.ACTION_ID, action.id) if action else None


# ------------------------------------------------------------------ gates


def logged_summary(run: RunEvidence, prefix: str) -> per_model.ShareSummary | None:
    """A model's ShareSummary as the statistics run logged it (numbers as metrics, text as params)."""
    if run.m(prefix + "n") is None:
        return None
    values = {}
    for f in fields(per_model.ShareSummary):
        if f.type in ("str", str):
            values[f.name] = run.params.get(prefix + f.name, "")
        else:
            c = run.m(prefix + f.name)
            values[f.name] = float(c.value) if c is not None else math.nan
    values["n"], values["n_dropped"], values["n_resamples"] = (int(values[k]) if math.isfinite(values[k]) else 0
                                                               for k in ("n", "n_dropped", "n_resamples"))
    return per_model.ShareSummary(**values)


def _decision(mission: Mission, previous: RunEvidence, changes: list[Change]) -> GateResult:
    gates = mission.gates
    run = _action_run(mission, previous, "statistics")
    result = logged_decision(mission, previous)
    if run is not None:
        for name in result.tested:
            key = partial(schema.model_key, name)
            cited = [c for c in (run.m(key(gates.metric, "mean")), run.m(key("verdict", "p_holm")),
                                 run.m(key("verdict", "collapsed"))) if c is not None]
            shown = ", ".join(f"{label} {cite(c)}" for label, c in zip(("image share", "Holm p", "collapsed"), cited))
            changes.append(Change(f"Model {code(name)}: {'collapse' if name in result.collapsed else 'no collapse shown'} "
                                  f"({shown}; {code(run.params.get(key('verdict', 'reason'), ''))}).",
                                  tuple(c.citation[1:-1] for c in cited), kind="verdict"))
    where = f"run {code(run.run_id)}" if run else "no statistics run"
    # the mission's gate values are the brief's text, not measurements: shown in a code span
    rule = f"min_models_tested={gates.min_models_tested}, min_models_collapsed={gates.min_models_collapsed}"
    tested = ", ".join(map(code, result.tested)) or "none"
    collapsed = ", ".join(map(code, result.collapsed)) or "none"
    controls = ", ".join(map(code, result.controls)) or "none"
    # the decision is a cited claim where the statistics logged the same one (they call the same function)
    logged = run.tags.get(schema.DECISION) if run else None
    said = (f"**{result.decision}** [{reference(run.run_id, schema.DECISION, 'tag')}]" if logged == result.decision
            else result.decision)
    text = (f"Decision {said} from the per-model verdicts logged in {where}: {result.rule} "
            f"(external models tested: {tested}; collapsed: {collapsed}; controls, never counted: {controls}; "
            f"gates {code(rule)}).")
    if not result.trustworthy:
        text += f" Not trustworthy: the verdict metric failed its controls ({', '.join(map(code, result.controls_failed))})."
    changes.insert(0, Change(text, (reference(run.run_id, schema.DECISION, "tag"),) if run
                             else (reference(previous.run_id, schema.CYCLE_ID, "tag"),)))
    return result


# ------------------------------------------------------------------ models


def _model_runs(previous: RunEvidence) -> dict[str, list[RunEvidence]]:
    """Every per-model run of the previous cycle (adapters, alternatives, diagnostics), by model name."""
    runs: dict[str, list[RunEvidence]] = {}
    for action in previous.children:
        for child in action.children:
            if child.tags.get(schema.KIND) == "model" and child.tags.get(schema.MODEL):
                runs.setdefault(child.tags[schema.MODEL], []).append(child)
    return runs


def _models(mission: Mission, previous: RunEvidence, changes: list[Change]):
    runs = _model_runs(previous)
    blocked = {name: next(r for r in rs if r.tags.get(schema.STATUS) == BLOCKED)
               for name, rs in runs.items() if any(r.tags.get(schema.STATUS) == BLOCKED for r in rs)}
    ran_before = set(filter(None, previous.params.get("models", "").split(","))) | {m.name for m in mission.models}
    by_name = {m.name: m for m in mission.models + mission.alternatives}

    chosen: list[ModelEntry] = []
    subs: dict[str, list[str]] = {}
    for entry in mission.models:
        if entry.name not in blocked:
            chosen.append(entry)
            continue
        run = blocked[entry.name]
        reason = run.tags.get(schema.REASON, "") or "no reason logged"
        picked, skipped = [], []
        for alt in entry.alternatives:
            if alt in blocked:
                skipped.append(f"{code(alt)} (Blocked in run {code(blocked[alt].run_id)})")
            elif alt in ran_before or any(m.name == alt for m in chosen) or alt in picked:
                skipped.append(f"{code(alt)} (already in the plan)")
            else:
                picked.append(alt)
        subs[entry.name] = picked
        chosen += [by_name[a] for a in picked]
        cause = f"Model {code(entry.name)} was Blocked in run {code(run.run_id)} ({code(reason)})"
        tail = f"; skipped: {', '.join(skipped)}" if skipped else ""
        if picked:
            changes.append(Change(f"{cause}: replaced by {', '.join(map(code, picked))} from the mission's alternatives{tail}.",
                                  (reference(run.run_id, schema.STATUS, "tag"),)))
        else:
            changes.append(Change(f"{cause}: dropped, no untried alternative is left{tail}; provide its weights "
                                  "(the handoff's 'How to provide weights') to bring it back.",
                                  (reference(run.run_id, schema.STATUS, "tag"),)))
    if not chosen:  # a mission needs a model: keep the blocked ones so the next cycle records the blockers again
        chosen = list(mission.models)
        changes.append(Change("No model is left after removing the Blocked ones: the next cycle keeps "
                              f"{', '.join(code(m.name) for m in chosen)} so the blockers stay visible.",
                              tuple(reference(blocked[m.name].run_id, schema.STATUS, "tag") for m in chosen if m.name in blocked)))
    names = {m.name for m in chosen}
    chosen = [_drop_alternatives(m, names, mission) for m in chosen]
    rest = [_drop_alternatives(m, names, mission) for m in mission.alternatives if m.name not in names]
    return tuple(chosen), tuple(rest), subs


def _drop_alternatives(entry: ModelEntry, in_plan: set[str], mission: Mission) -> ModelEntry:
    """Alternatives must name models that still exist in the next mission (models or alternatives)."""
    existing = in_plan | {m.name for m in mission.alternatives if m.name not in in_plan}
    kept = tuple(a for a in entry.alternatives if a in existing and a not in in_plan)
    return entry if kept == entry.alternatives else entry.model_copy(update={"alternatives": kept})


# ------------------------------------------------------------------ actions


def _actions(mission: Mission, previous: RunEvidence, changes: list[Change]):
    checks = check_criteria(mission, previous)
    failures: dict[str, int] = {}
    retried: dict[str, str] = {}
    escalated: list[Escalation] = []
    cycle_id = previous.tags.get(schema.CYCLE_ID, previous.run_id)
    for action in _ordered(mission):
        prior = _int_tag(previous, schema.failures_tag(action.id), 0)
        run = previous.child(schema.ACTION_ID, action.id)
        mine = [c for c in checks if c.action_id == action.id]
        status = final_status(run.tags.get(schema.STATUS, FAILED), mine) if run else "Not run"
        if status == COMPLETED:
            count = 0
        elif status == FAILED:
            count = prior + 1
        else:  # Blocked or not run: it did not run, so the streak neither grows nor breaks
            count = prior
        failures[action.id] = count
        if count == 0 or run is None:
            if count >= ESCALATE_AFTER:
                escalated.append(Escalation(action.id, action.owner, "not run since its escalation", count,
                                            reference(previous.run_id, schema.failures_tag(action.id), "tag")))
            continue
        error = _error(run, mine)
        ref = reference(run.run_id, schema.STATUS, "tag")
        if status == FAILED and count < ESCALATE_AFTER:
            retried[action.id] = error
            changes.append(Change(f"Action {code(action.id)} Failed in cycle {code(cycle_id)} (run {code(run.run_id)}: "
                                  f"{error}): retried once in the next cycle, escalated if it fails again.", (ref,)))
        elif count >= ESCALATE_AFTER:
            escalated.append(Escalation(action.id, action.owner, error, count, ref))
            changes.append(Change(f"Action {code(action.id)} {'Failed' if status == FAILED else 'stays escalated, ' + status} "
                                  f"in consecutive cycles up to {code(cycle_id)} (run {code(run.run_id)}: {error}): escalated "
                                  f"to the planning team with owner {code(action.owner)}, not retried automatically.", (ref,)))
    return failures, retried, escalated


def _numeric(c: Cited | None) -> bool:
    return c is not None and not isinstance(c.value, str)


def _error(run: RunEvidence, checks) -> str:
    """The logged reason, or the criteria the action missed with their observed values."""
    reason = run.tags.get(schema.REASON, "")
    missed = [f"criterion {code(c.description)} not met: {code(c.metric)} = "
              f"{cite(c.evidence) if c.evidence else 'not logged'}, required {c.op} "
              f"{cite(c.required_evidence) if _numeric(c.required_evidence) else code(f'{c.required:g} (mission)')}"
              for c in checks if not c.passed]
    parts = ([code(reason)] if reason else []) + missed
    return "; ".join(parts) or code(run.tags.get(schema.STATUS, "no reason logged"))
