"""The whole statistical analysis of a scores table (``analyze``).

``analyze`` is the one entry point for the statistics of a table (the CLI and
the Week-1 flow both call it): every per-model summary, collapse verdict, TOST
and balance call, and every pairwise comparison of models on their common
samples, Holm-corrected across the pairwise family. The table is loaded and
validated by ``tasks.stats.table``.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import numpy as np
import pandas as pd

from tasks.stats.comparisons import HOLM_CORRECTION, PairedComparison, holm, paired_comparison
from tasks.stats.per_model import (
    BalanceCall,
    ShareSummary,
    TostResult,
    Verdict,
    balance_call,
    collapse_verdict,
    summarize,
    tost,
)
from tasks.stats.reliance import Reliance, reliance
from tasks.stats.table import validate_scores

__all__ = ["ModelMetricResult", "PairwiseResult", "Analysis", "analyze"]


@dataclass(frozen=True)
class ModelMetricResult:
    """One model x metric: summary, collapse verdict (None unless baseline 0.5), TOST, per-sample reliance, call.

    ``subject``: the model is in the collapse test's Holm family (a control --
    calibration or RANDOM-INIT model -- is not, and its verdict uses its own p).
    """

    model: str
    metric: str
    summary: ShareSummary
    verdict: Verdict | None
    equivalence: TostResult
    call: BalanceCall
    reliance: Reliance | None = None
    subject: bool = True

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"model": self.model, "metric": self.metric}
        row.update(_fields(self.summary))
        row.update({f"tost_{k}": v for k, v in _fields(self.equivalence).items()
                    if k not in ("n", "n_dropped", "mean", "baseline")})
        verdict = _fields(self.verdict) if self.verdict is not None else {
            f.name: (math.nan if f.type in ("float", float) else None) for f in fields(Verdict)}
        row.update({f"verdict_{k}": v for k, v in verdict.items()})
        if self.reliance is not None:
            row.update({f"reliance_{k}": v for k, v in _fields(self.reliance).items()})
        row.update({"subject": self.subject, "direction": self.call.direction})
        row.update({"label": self.call.label, "dominant": self.call.dominant,
                    "collapsed": self.call.collapsed, "differs": self.call.differs,
                    "equivalent": self.call.equivalent, "reason": self.call.reason})
        return row


@dataclass(frozen=True)
class PairwiseResult:
    """Model A vs model B on one metric, on the sample_ids both have.

    ``p_holm`` is the paired t-test p Holm-adjusted across the analysis'
    whole pairwise family (``reject`` at alpha); the Wilcoxon and permutation
    p are adjusted the same way within their own families. ``label`` reads
    the Holm-adjusted t-test: "A > B" / "A < B", or "not shown to differ"
    (never "equal"), or "not testable".
    """

    metric: str
    model_a: str
    model_b: str
    n_only_a: int
    n_only_b: int
    comparison: PairedComparison
    p_holm: float
    reject: bool
    p_holm_wilcoxon: float
    p_holm_perm: float
    label: str

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"metric": self.metric, "model_a": self.model_a, "model_b": self.model_b,
                               "n_only_a": self.n_only_a, "n_only_b": self.n_only_b}
        row.update(_fields(self.comparison))
        row.update({"p_holm": self.p_holm, "reject_holm": self.reject, "p_holm_wilcoxon": self.p_holm_wilcoxon,
                    "p_holm_perm": self.p_holm_perm, "label": self.label})
        return row


@dataclass(frozen=True)
class Analysis:
    """Everything ``analyze`` computed for one scores table."""

    baseline: float
    margin: float
    alpha: float
    threshold: float
    n_resamples: int
    seed: int
    per_model: tuple[ModelMetricResult, ...]
    pairwise: tuple[PairwiseResult, ...]
    correction: str = HOLM_CORRECTION
    correction_method: str = "holm"
    family: str = "all pairwise comparisons (every pair of models on every metric), paired t-test p"
    family_size: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def params(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "margin": self.margin, "alpha": self.alpha,
                "threshold": self.threshold, "n_resamples": self.n_resamples, "seed": self.seed}

    def per_model_frame(self) -> pd.DataFrame:
        """One row per (model, metric): summary fields, ``tost_*``, ``verdict_*``, label, reason."""
        return pd.DataFrame([r.row() for r in self.per_model])

    def pairwise_frame(self) -> pd.DataFrame:
        """One row per (metric, model pair): comparison fields, Holm-adjusted p, label."""
        columns = ["metric", "model_a", "model_b", "n_only_a", "n_only_b",
                   *(f.name for f in fields(PairedComparison)),
                   "p_holm", "reject_holm", "p_holm_wilcoxon", "p_holm_perm", "label"]
        return pd.DataFrame([r.row() for r in self.pairwise], columns=columns)

    def to_json_dict(self) -> dict[str, Any]:
        """Machine-readable, ``json.dumps(..., allow_nan=False)``-safe: NaN/inf become null."""
        return _jsonable({
            "params": self.params(),
            "correction": {"name": self.correction, "method": self.correction_method,
                           "family": self.family, "family_size": self.family_size},
            "per_model": [{"model": r.model, "metric": r.metric, "summary": asdict(r.summary),
                           "verdict": asdict(r.verdict) if r.verdict is not None else None,
                           "tost": asdict(r.equivalence), "call": asdict(r.call), "subject": r.subject,
                          "reliance": asdict(r.reliance) if r.reliance is not None else None} for r in self.per_model],
            "pairwise": [{"metric": r.metric, "model_a": r.model_a, "model_b": r.model_b,
                          "n_only_a": r.n_only_a, "n_only_b": r.n_only_b,
                          "comparison": asdict(r.comparison), "p_holm": r.p_holm, "reject_holm": r.reject,
                          "p_holm_wilcoxon": r.p_holm_wilcoxon, "p_holm_perm": r.p_holm_perm,
                          "label": r.label} for r in self.pairwise],
            "notes": list(self.notes),
        })

    def as_dict(self, prefix: str = "") -> dict[str, float | int]:
        """Flat numeric dict for ``mlflow.log_metrics``: ``{metric}/{model}/{field}`` and
        ``{metric}/{a}_vs_{b}/{field}`` (``schema.analysis_key``), names reduced to MLflow's allowed characters."""
        from tasks.evidence import schema  # here, not at the top: the stats CLI imports this module without MLflow

        out: dict[str, float | int] = {}
        for r in self.per_model:
            key = prefix + schema.analysis_key(_key(r.metric), _key(r.model))
            out.update(r.summary.as_dict(key))
            out.update(r.equivalence.as_dict(key + "tost_"))
            if r.verdict is not None:
                out.update(r.verdict.as_dict(key + "verdict_"))
            if r.reliance is not None:
                out.update(r.reliance.as_dict(key + "reliance_"))
        for r in self.pairwise:
            key = prefix + schema.analysis_key(_key(r.metric), schema.pair_name(_key(r.model_a), _key(r.model_b)))
            out.update(r.comparison.as_dict(key))
            out.update({key + "p_holm": float(r.p_holm), key + "reject_holm": int(r.reject),
                        key + "p_holm_wilcoxon": float(r.p_holm_wilcoxon),
                        key + "p_holm_perm": float(r.p_holm_perm)})
        out[f"{prefix}holm_family_size"] = self.family_size
        return out


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. ]", "_", name)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _check_params(baseline: float, margin: float, alpha: float, threshold: float, n_resamples: int) -> None:
    problems = []
    if not (math.isfinite(baseline) and 0.0 < baseline < 1.0):
        problems.append(f"baseline {baseline} must lie in (0, 1) (0.5 = balanced)")
    if not (math.isfinite(margin) and margin > 0):
        problems.append(f"margin {margin} must be positive (the TOST equivalence margin, e.g. 0.05)")
    if not (0.0 < alpha < 1.0):
        problems.append(f"alpha {alpha} must lie in (0, 1), e.g. 0.05")
    if not (0.5 < threshold < 1.0):
        problems.append(f"threshold {threshold} must lie in (0.5, 1) (collapse = imbalance above it, e.g. 0.80)")
    if int(n_resamples) < 1:
        problems.append(f"n_resamples {n_resamples} must be at least 1 (9999 recommended)")
    if problems:
        raise ValueError("; ".join(problems))


def _pair_label(a: str, b: str, comparison: PairedComparison, p_holm: float, alpha: float) -> str:
    if not math.isfinite(p_holm):
        return "not testable"
    if p_holm < alpha:
        return f"{a} > {b}" if comparison.mean_diff > 0 else f"{a} < {b}"
    return "not shown to differ"


def analyze(
    scores: pd.DataFrame,
    baseline: float = 0.5,
    margin: float = 0.05,
    alpha: float = 0.05,
    threshold: float = 0.80,
    n_resamples: int = 9999,
    seed: int = 0,
    subjects: Sequence[str] | None = None,
    pairwise: bool = True,
) -> Analysis:
    """Run the whole statistical framework on a scores table.

    Per (model, metric): ``summarize`` (BCa CI at 1 - alpha, t-test,
    Wilcoxon, d and its CI, power at alpha), ``reliance.reliance`` (per-sample
    imbalance, fractions beyond the threshold with exact CIs),
    ``collapse_verdict`` (only when ``baseline`` is 0.5, where collapse
    is defined; Holm-corrected across ``subjects`` on the same metric),
    ``tost`` within ``baseline +/- margin`` and ``balance_call``.
    ``subjects``: the models whose collapse tests form the Holm family (the
    external models a decision counts); default every model. The others are
    controls: verdict at their own p, never in the family. ``pairwise=False``
    skips the pairwise comparisons (per-model results only). Per metric and pair of models, on the
    sample_ids both have: ``paired_comparison``; then Holm across all
    pairwise comparisons of the table. Models and metrics keep their order of
    first appearance. ``scores`` is validated first (``ScoresTableError``).
    """
    _check_params(baseline, margin, alpha, threshold, n_resamples)
    table = validate_scores(scores)
    notes: list[str] = []
    if baseline != 0.5:
        notes.append(f"baseline {baseline} != 0.5: collapse verdicts (defined against 0.5) not computed")
    metrics = list(dict.fromkeys(table["metric"]))
    per_model: list[ModelMetricResult] = []
    pending: list[tuple[str, str, str, int, int, PairedComparison]] = []
    for metric in metrics:
        sub = table[table["metric"] == metric]
        by_model = {m: g.set_index("sample_id")["value"] for m, g in sub.groupby("model", sort=False)}
        first: dict[str, tuple] = {}
        for model, series in by_model.items():
            values = series.to_numpy()
            summary = summarize(values, baseline=baseline, n_resamples=n_resamples, seed=seed, alpha=alpha,
                                      confidence=1.0 - alpha)
            rel = reliance(values, threshold=threshold, margin=margin, alpha=alpha, n_resamples=n_resamples, seed=seed)
            verdict = (collapse_verdict(summary, threshold=threshold, alpha=alpha, reliance=rel)
                       if baseline == 0.5 else None)
            first[model] = (values, summary, rel, verdict)
        in_family = [m for m in by_model if subjects is None or m in subjects]
        family = holm({m: first[m][3].p for m in in_family if first[m][3] is not None}, alpha=alpha)
        p_holm = dict(zip(family.names, family.adjusted))
        for model, (values, summary, rel, verdict) in first.items():
            if verdict is not None and model in p_holm:
                verdict = collapse_verdict(summary, threshold=threshold, alpha=alpha, reliance=rel,
                                                 p_holm=p_holm[model])
            equivalence = tost(values, baseline=baseline, margin=margin, alpha=alpha)
            call = balance_call(summary, equivalence, verdict, alpha=alpha, reliance=rel)
            per_model.append(ModelMetricResult(model, metric, summary, verdict, equivalence, call, rel,
                                               model in in_family))
        for a, b in itertools.combinations(by_model, 2) if pairwise else ():
            sa, sb = by_model[a], by_model[b]
            common = sa.index.intersection(sb.index).sort_values()
            comparison = paired_comparison(sa.loc[common].to_numpy(), sb.loc[common].to_numpy(),
                                                 n_resamples=n_resamples, seed=seed)
            n_only_a, n_only_b = len(sa) - len(common), len(sb) - len(common)
            if n_only_a or n_only_b:
                notes.append(f"{metric}: {a} vs {b} paired on {len(common)} common sample_ids "
                             f"({n_only_a} only in {a}, {n_only_b} only in {b})")
            pending.append((metric, a, b, n_only_a, n_only_b, comparison))

    def adjust(p: list[float]) -> tuple[tuple[float, ...], tuple[bool, ...]]:
        h = holm(p, alpha=alpha)
        return h.adjusted, h.reject

    t_adj, t_rej = adjust([c.t_p for *_, c in pending])
    w_adj, _ = adjust([c.wilcoxon_p for *_, c in pending])
    p_adj, _ = adjust([c.perm_p for *_, c in pending])
    pairwise = tuple(
        PairwiseResult(metric, a, b, oa, ob, c, t_adj[i], t_rej[i], w_adj[i], p_adj[i],
                       _pair_label(a, b, c, t_adj[i], alpha))
        for i, (metric, a, b, oa, ob, c) in enumerate(pending)
    )
    return Analysis(
        baseline=float(baseline), margin=float(margin), alpha=float(alpha), threshold=float(threshold),
        n_resamples=int(n_resamples), seed=int(seed), per_model=tuple(per_model), pairwise=pairwise,
        family_size=sum(math.isfinite(c.t_p) for *_, c in pending), notes=tuple(notes),
    )

