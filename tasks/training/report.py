"""The training mission's handoff and paper section, rendered from the cycle's evidence alone.

Figures are drawn from the tables logged on the training runs (not from
memory), every number goes through the cite filters, and the exact config a
rollback restores is written next to the handoff.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from tasks import evidence
from tasks.evidence import COMPLETED, schema
from tasks.evidence.cited import Cited
from tasks.reporting import literature, paper
from tasks.reporting.rendering import make_env
from tasks.training import checklist, plots
from tasks.training.mission import TrainingMission, Variant


@dataclass
class VariantView:
    variant: Variant
    decision: str
    compare: evidence.RunEvidence
    seeds: list[int] = field(default_factory=list)

    def m(self, *parts: str) -> Cited | None:
        return self.compare.m(schema.variant_key(self.variant.name, *parts))

    def flag(self, key: str) -> bool:
        c = self.m("criteria", key)
        return bool(c and c.value == 1)


def view(mission: TrainingMission, tree: evidence.RunEvidence) -> dict:
    compare, check, train = action(tree, "COMPARE"), action(tree, "CHECKLIST"), action(tree, "TRAIN")
    runs = training_runs(tree)
    variants = []
    if compare:
        for v in mission.variants:
            decision = compare.params.get(schema.variant_key(v.name, "decision"))
            if decision:
                seeds = schema.variant_seeds(compare.metrics, v.name)
                variants.append(VariantView(v, decision, compare, seeds))
    items = checklist.evaluate(mission.checklist, runs, compare, [v.name for v in mission.variants])
    not_trained = [c for c in (train.children if train else []) if c.tags.get(schema.STATUS) not in (None, "Completed")]
    adopted = [v for v in variants if v.decision == "ADOPT"]
    best = max(variants, key=lambda v: float(v.m("share/mean_a").value) if v.m("share/mean_a") else -1, default=None)
    return {
        "mission": mission, "cycle": tree, "cycle_id": tree.tags.get(schema.CYCLE_ID, tree.run_id),
        "started": datetime.fromtimestamp(tree.start_time / 1000, tz=timezone.utc).isoformat(timespec="seconds"),
        "compare": compare, "check": check, "train": train, "runs": runs, "variants": variants, "items": items,
        "not_trained": not_trained, "adopted": adopted, "best": best, "baseline_config": mission.baseline.config,
        "rollbacks": [v for v in variants if v.decision == "ROLLBACK"],
        "baseline_yaml": yaml.safe_dump({"baseline": mission.baseline.config.model_dump(mode="json")}, sort_keys=False),
        "ablations": ablation_groups(mission), "metric": mission.gates.metric, "fa_providecommand": paper.FA_PROVIDECOMMAND,
        "target_met": bool(best and best.flag("target_met") and best.flag("share_improved")),
    }


def draw_curves(runs: dict[str, evidence.RunEvidence], folder: Path) -> list[Path]:
    """Training and gradient-flow curves from the tables logged on each training run."""
    curves, grads = [], []
    for run in runs.values():
        tag = {"config": run.tags[schema.CONFIG], "seed": int(run.tags[schema.SEED])}
        curves.append(evidence.read_table(run.run_id, "curves.csv").assign(**tag))
        grads.append(evidence.read_table(run.run_id, "grads.csv").assign(**tag))
    if not curves:
        return []
    return [plots.training_curves(pd.concat(curves, ignore_index=True), folder / "training_curves.png"),
            plots.gradient_flow(pd.concat(grads, ignore_index=True), folder / "gradient_flow.png")]


def render(mission: TrainingMission, tree: evidence.RunEvidence, report_dir: Path) -> list[Path]:
    """Write the handoff, the rollback config and the paper's mitigation section; return the written paths."""
    context = view(mission, tree)
    plots_dir = report_dir / "handoff" / "plots"
    drawn = draw_curves(context["runs"], plots_dir)
    if context["compare"] is not None:  # the comparison's figures, as logged
        for name in ("before_after.png", *(f"ablation_{p.replace('.', '_')}.png" for p in context["ablations"])):
            if not (plots_dir / name).exists() and f"plots/{name}" in _artifacts(context["compare"].run_id):
                evidence.fetch_artifacts(context["compare"].run_id, f"plots/{name}", plots_dir.parent)
    context["figures"] = sorted(p.name for p in plots_dir.glob("*.png")) if plots_dir.exists() else []
    env = make_env()
    written = [_write(report_dir / "handoff" / "execution_progress_update.md",
                      env.get_template("training/handoff.md.j2").render(**context))]
    written.append(_write(report_dir / "handoff" / "rollback_config.yaml", context["baseline_yaml"]))
    penv = paper.with_paper_filters(make_env())
    penv.filters["tex"] = literature.tex_escape
    for ext in ("md", "tex"):
        written.append(_write(report_dir / "paper" / f"mitigation_results.{ext}",
                              penv.get_template(f"training/mitigation_results.{ext}.j2").render(**context)))
    return written + drawn


def _artifacts(run_id: str) -> set[str]:
    return {f.path for f in evidence.client().list_artifacts(run_id, "plots")}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ evidence helpers (shared with the stages)

def ablation_groups(mission: TrainingMission) -> dict[str, list[str]]:
    """parameter → the single-delta variants that change it (an ablation curve needs two or more)."""
    groups: dict[str, list[str]] = {}
    for v in mission.variants:
        if len(v.deltas) == 1:
            groups.setdefault(v.deltas[0].parameter, []).append(v.name)
    return {p: names for p, names in groups.items() if len(names) >= 2}


def action(tree: evidence.RunEvidence, action_id: str) -> evidence.RunEvidence | None:
    return tree.child(schema.ACTION_ID, action_id)


def training_runs(tree: evidence.RunEvidence) -> dict[str, evidence.RunEvidence]:
    """``config seed N`` → its finished training run, read from the TRAIN action."""
    train_action = action(tree, "TRAIN")
    if train_action is None:
        return {}
    return {f"{c.tags[schema.CONFIG]} seed {c.tags[schema.SEED]}": c for c in train_action.children
            if c.tags.get(schema.KIND) == "training" and c.tags.get(schema.STATUS) == COMPLETED}
