"""The probing handoff's context, built from the cycle's evidence alone (MLflow run tree → template values)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tasks.evidence import RunEvidence, schema
from tasks.evidence.cited import Cited
from tasks.probing.mission import ProbingMission
from tasks.reporting.views import OpenedModel, action_views, opened_fields

METRIC_LABELS = {"spatial_iou": "Spatial IoU", "bbox_iou": "Bbox IoU", "map50": "mAP@0.5",
                 "position_accuracy": "position accuracy", "presence_accuracy": "presence accuracy",
                 "position_selectivity": "position selectivity", "presence_selectivity": "presence selectivity",
                 "bbox_selectivity": "Bbox IoU selectivity"}


@dataclass
class PointView:
    id: str
    at: str
    key: str
    note: str
    stage: str
    metrics: dict[str, Cited] = field(default_factory=dict)
    cka: Cited | None = None
    cka_debiased: Cited | None = None

    def m(self, key: str) -> Cited | None:
        return self.metrics.get(key)


@dataclass
class ModelView(OpenedModel):
    name: str
    role: str
    planted: str | None = None
    points: list[PointView] = field(default_factory=list)
    cells: dict[str, dict[str, Cited | str]] = field(default_factory=dict)
    passed: Cited | None = None
    probes_run: str = ""
    curves: str = ""
    heatmap: str = ""

    @property
    def label(self) -> str:
        return self.name + {"random-init": " (RANDOM-INIT)", "calibration": " (calibration)"}.get(self.role, "")


def _action(mission: ProbingMission, cycle: RunEvidence, stage: str) -> RunEvidence | None:
    action = mission.for_stage(stage)
    return cycle.child(schema.ACTION_ID, action.id) if action else None


def probing_view(mission: ProbingMission, cycle: RunEvidence, quality: RunEvidence | None = None) -> dict:
    actions = action_views(mission, cycle)
    runs = {s: _action(mission, cycle, s) for s in ("models", "extraction", "probes", "alignment", "decision")}
    decision = runs["decision"]
    models = []
    for entry in mission.models:
        opened = runs["models"].child(schema.MODEL, entry.name) if runs["models"] else None
        view = ModelView(entry.name, "calibration" if entry.calibration else "subject", planted=entry.planted,
                         **opened_fields(opened))
        if opened:
            view.role = opened.tags.get(schema.ROLE, view.role)
        probed = runs["probes"].child(schema.MODEL, entry.name) if runs["probes"] else None
        aligned = runs["alignment"].child(schema.MODEL, entry.name) if runs["alignment"] else None
        vision = next(p.id for p in entry.points if entry.stage(p) == "vision")
        for p in entry.points:
            key = opened.params.get(schema.point_layer_key(p.id), "") if opened else ""
            pv = PointView(p.id, p.at, key, p.note, entry.stage(p))
            if probed:
                parsed = ((schema.probe_key_parts(k), v) for k, v in probed.metrics.items())
                pv.metrics = {metric: v for (point, metric), v in parsed if point == p.id and metric}
            if aligned:
                pv.cka, pv.cka_debiased = aligned.m(schema.cka_key(p.id, vision)), aligned.m(schema.cka_key(p.id, vision, debiased=True))
            view.points.append(pv)
        if probed:
            view.probes_run = probed.run_id
            view.curves = f"{entry.name}_probe_curves.png"
        if aligned:
            view.heatmap = f"{entry.name}_cka.png"
        if decision:
            for t in mission.thresholds:
                prefix = schema.matrix_key(entry.name, t.metric, "")
                if decision.m(prefix + "passed") is not None:
                    view.cells[t.metric] = {"value": decision.m(prefix + "value"), "judged": decision.m(prefix + "judged"),
                                            "passed": decision.m(prefix + "passed"),
                                            "point": decision.params.get(prefix + "point", "")}
            view.passed = decision.m(schema.matrix_key(entry.name, "passed"))
        models.append(view)
    selected = [n for n in (decision.tags.get(schema.SELECTED_MODELS, "none") if decision else "none").split(",") if n != "none"]
    return {
        "mission": mission, "cycle": cycle, "cycle_id": cycle.tags.get(schema.CYCLE_ID, cycle.run_id),
        "started": datetime.fromtimestamp(cycle.start_time / 1000, tz=timezone.utc).isoformat(timespec="seconds"),
        "actions": actions, "models": models, "runs": runs, "decision_run": decision, "selected": selected,
        "labels": METRIC_LABELS, "quality": quality,
        "any_random_init": any(m.role == "random-init" for m in models),
        "calibration": [m for m in models if m.role == "calibration"],
        "subjects": [m for m in models if m.role == "subject" and m.cells],  # measured subject models
        "controls_judged": [m for m in models if m.role != "subject" and m.cells],
    }


def render(env, view: dict, report_dir: Path) -> list[Path]:
    written = []
    for template, target in (("probing/execution_progress_update.md.j2", "handoff/execution_progress_update.md"),):
        path = report_dir / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(env.get_template(template).render(**view), encoding="utf-8")
        written.append(path)
    return written
