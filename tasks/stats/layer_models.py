"""Statistics of per-layer scores: a mixed-effects model and per-layer mean profiles.

Input is a long DataFrame with one row per (model, sample, layer): columns
``model``, ``sample_id``, ``layer_index``, ``value``. The same sample_id under
different models is the same input sample, so samples are the grouping
factor (random intercept) and model and layer are fixed effects:
``score ~ C(model) + C(layer)`` (``score ~ C(layer)`` for one model), fitted
by REML with statsmodels ``mixedlm``. A fit that did not converge, or that
statsmodels warned about, says so in the returned object instead of raising:
callers must check ``reliable`` before quoting its p-values.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats as sps

from tasks.stats import inference

__all__ = ["LAYER_COLUMNS", "LayerMixedModel", "fit_layer_model", "layer_profile", "validate_layer_frame"]

LAYER_COLUMNS = ("model", "sample_id", "layer_index", "value")
NAN = float("nan")


@dataclass(frozen=True, eq=False)
class LayerMixedModel:
    """A fitted ``score ~ C(model) + C(layer)`` random-intercept model (groups = sample).

    ``fixed_effects``: index = term (statsmodels names, e.g. ``C(layer)[T.3]``),
    columns coef, se, z, p, ci_low, ci_high (Wald, 95 %); the coefficients are
    differences from ``reference`` (the first model and layer in sorted order).
    ``term_tests``: joint Wald chi-square test per term (does the model / the
    layer matter at all), columns chi2, df, p. ``converged`` is statsmodels'
    flag; ``warnings`` every warning raised while fitting (e.g. "The MLE may be
    on the boundary of the parameter space", meaning the between-sample
    variance is estimated at ~0); ``error`` the exception text when no fit was
    possible (estimates are then NaN and the frames empty).

    The model is fitted to ``score / response_sd`` and every estimate scaled
    back (coefficients, SEs and CIs by ``response_sd``, variances by its
    square, the REML log-likelihood by ``-(n - p) log response_sd``; z, p and
    convergence are scale-free). statsmodels flags "boundary" whenever the
    group variance is below an absolute 0.01, which on the raw scale of
    shares in [0, 1] is every fit; standardised, it means below 1 % of the
    score variance.
    """

    formula: str
    groups: str
    method: str
    n_obs: int
    n_dropped: int
    n_groups: int
    n_models: int
    n_layers: int
    reference: dict[str, str]
    converged: bool
    warnings: tuple[str, ...]
    error: str
    fixed_effects: pd.DataFrame
    term_tests: pd.DataFrame
    group_variance: float
    residual_variance: float
    log_likelihood: float
    response_sd: float = NAN
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reliable(self) -> bool:
        """Converged, no exception and no warning: safe to quote."""
        return self.converged and not self.error and not self.warnings

    def as_dict(self, prefix: str = "") -> dict[str, float | int]:
        """Flat numbers for MLflow: fit diagnostics, variances, term-test and coefficient p-values."""
        out: dict[str, float | int] = {
            f"{prefix}{k}": v for k, v in {
                "n_obs": self.n_obs, "n_dropped": self.n_dropped, "n_groups": self.n_groups,
                "n_models": self.n_models, "n_layers": self.n_layers, "converged": int(self.converged),
                "reliable": int(self.reliable), "n_warnings": len(self.warnings),
                "group_variance": float(self.group_variance), "residual_variance": float(self.residual_variance),
                "log_likelihood": float(self.log_likelihood), "response_sd": float(self.response_sd),
            }.items()
        }
        for term, row in self.term_tests.iterrows():
            out[f"{prefix}term_p_{_key(term)}"] = float(row["p"])
        for term, row in self.fixed_effects.iterrows():
            out[f"{prefix}coef_{_key(term)}"] = float(row["coef"])
            out[f"{prefix}p_{_key(term)}"] = float(row["p"])
        return out

    def as_params(self, prefix: str = "") -> dict[str, str]:
        return {f"{prefix}formula": self.formula, f"{prefix}groups": self.groups, f"{prefix}method": self.method,
                f"{prefix}warnings": " | ".join(self.warnings), f"{prefix}error": self.error,
                **{f"{prefix}reference_{k}": v for k, v in self.reference.items()}}


def _key(term: str) -> str:
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in str(term)).strip("_")


def validate_layer_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Check the long per-layer frame; return ``(clean, n_dropped)``.

    ``clean`` has model and sample_id as str, layer_index as int, value as
    float, rows with a non-finite value dropped (counted in ``n_dropped``:
    layers where a metric is undefined). Raises ValueError naming the problem.
    """
    missing = [c for c in LAYER_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"per-layer frame: missing column(s) {missing}; found {list(map(str, frame.columns))}; "
            f"fix: pass a long frame with columns {', '.join(LAYER_COLUMNS)}"
        )
    values = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=float)
    layers = pd.to_numeric(frame["layer_index"], errors="coerce").to_numpy(dtype=float)
    bad_layer = ~np.isfinite(layers) | (layers != np.round(layers))
    if bad_layer.any():
        i = int(np.flatnonzero(bad_layer)[0])
        raise ValueError(
            f"per-layer frame: row {i}: layer_index {frame['layer_index'].iloc[i]} is not an integer; "
            "fix: number layers 0, 1, 2, ..."
        )
    clean = pd.DataFrame({"model": frame["model"].astype(str).to_numpy(),
                          "sample_id": frame["sample_id"].astype(str).to_numpy(),
                          "layer_index": layers.astype(int), "value": values})
    keep = np.isfinite(values)
    dup = clean[keep].duplicated(subset=["model", "sample_id", "layer_index"])
    if dup.any():
        row = clean[keep][dup].iloc[0]
        raise ValueError(
            f"per-layer frame: duplicated (model, sample_id, layer_index) = "
            f"({row['model']!r}, {row['sample_id']!r}, {row['layer_index']}); fix: one value per model, sample and layer"
        )
    return clean[keep].reset_index(drop=True), int((~keep).sum())


def fit_layer_model(frame: pd.DataFrame) -> LayerMixedModel:
    """Fit ``score ~ C(model) + C(layer)`` (or ``score ~ C(layer)``), random intercept per sample.

    Warnings are captured and reported, never printed; a fit that raises
    (too few samples, singular design) returns ``error`` set. Terms with a
    single level are left out of the formula (they would be collinear with
    the intercept) and named in ``notes``.
    """
    clean, n_dropped = validate_layer_frame(frame)
    data = clean.rename(columns={"value": "score", "layer_index": "layer"})
    models = sorted(data["model"].unique())
    layers = sorted(data["layer"].unique())
    terms, notes = [], []
    if len(models) > 1:
        terms.append("C(model)")
    if len(layers) > 1:
        terms.append("C(layer)")
    else:
        notes.append("one layer only: no layer term")
    formula = "score ~ " + (" + ".join(terms) if terms else "1")
    reference = {"model": str(models[0]) if models else "", "layer": str(layers[0]) if layers else ""}
    base = dict(formula=formula, groups="sample_id", method="REML", n_obs=len(data), n_dropped=n_dropped,
                n_groups=int(data["sample_id"].nunique()), n_models=len(models), n_layers=len(layers),
                reference=reference)
    record: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            if data["sample_id"].nunique() < 2:
                raise ValueError(f"{data['sample_id'].nunique()} sample(s): a random intercept needs at least 2")
            sd = float(data["score"].std(ddof=1))
            if not (math.isfinite(sd) and sd > 0):
                raise ValueError("the scores have zero variance: nothing to model")
            scaled = data.assign(score=data["score"] / sd)
            result = smf.mixedlm(formula, scaled, groups=scaled["sample_id"]).fit(reml=True)
            names = result.fe_params.index
            fe = pd.DataFrame({"coef": result.fe_params * sd, "se": result.bse_fe * sd,
                               "z": result.tvalues[names], "p": result.pvalues[names]})
            ci = result.conf_int().loc[names]
            fe["ci_low"], fe["ci_high"] = ci[0] * sd, ci[1] * sd
            term_tests = _term_tests(result, terms)
    except (ValueError, np.linalg.LinAlgError) as exc:
        return LayerMixedModel(**base, converged=False, warnings=_messages(record), error=f"{type(exc).__name__}: {exc}",
                               fixed_effects=pd.DataFrame(columns=["coef", "se", "z", "p", "ci_low", "ci_high"]),
                               term_tests=pd.DataFrame(columns=["chi2", "df", "p"]), group_variance=NAN,
                               residual_variance=NAN, log_likelihood=NAN, notes=tuple(notes))
    return LayerMixedModel(
        **base, converged=bool(result.converged), warnings=_messages(record), error="",
        fixed_effects=fe, term_tests=term_tests, group_variance=float(np.asarray(result.cov_re)[0, 0]) * sd**2,
        residual_variance=float(result.scale) * sd**2,
        log_likelihood=float(result.llf) - (len(data) - len(names)) * math.log(sd), response_sd=sd,
        notes=tuple(notes),
    )


def _messages(record: list[warnings.WarningMessage]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in record))


def _term_tests(result, terms: list[str]) -> pd.DataFrame:
    """Joint Wald chi-square test of each categorical term's coefficients."""
    names = list(result.fe_params.index)
    rows = {}
    for term in terms:
        idx = [i for i, n in enumerate(names) if n.startswith(term + "[")]
        if not idx:
            continue
        constraints = np.zeros((len(idx), len(result.params)))
        for r, i in enumerate(idx):
            constraints[r, i] = 1.0
        test = result.wald_test(constraints, scalar=True)
        rows[term] = {"chi2": float(test.statistic), "df": len(idx), "p": float(test.pvalue)}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["chi2", "df", "p"])


def layer_profile(
    frame: pd.DataFrame, confidence: float = 0.95, method: str = "t", n_resamples: int = 9999, seed: int = 0
) -> pd.DataFrame:
    """Per (model, layer): n, mean, SD and a CI of the mean, for layer-profile plots.

    ``method="t"`` (default): Student-t interval -- a profile has one CI per
    layer per model (hundreds), and these are descriptive bands, not tests.
    ``method="bca"``: the BCa bootstrap of ``inference.bootstrap_mean_ci``.
    Rows are sorted by model (first appearance) then layer.
    """
    if method not in ("t", "bca"):
        raise ValueError(f"layer_profile method {method!r}: use 't' or 'bca'")
    clean, _ = validate_layer_frame(frame)
    rows = []
    for (model, layer), g in clean.groupby(["model", "layer_index"], sort=False):
        x = g["value"].to_numpy()
        n, mean = len(x), float(np.mean(x))
        sd = float(np.std(x, ddof=1)) if n >= 2 else NAN
        if method == "bca":
            lo, hi, ci_method = inference.bootstrap_mean_ci(x, confidence, n_resamples, seed)
        elif n >= 2 and sd > 0:
            lo, hi = (float(v) for v in sps.t.interval(confidence, n - 1, loc=mean, scale=sd / math.sqrt(n)))
            ci_method = "t"
        elif n >= 2:
            lo = hi = mean
            ci_method = "degenerate"
        else:
            lo = hi = NAN
            ci_method = "none"
        rows.append({"model": model, "layer_index": int(layer), "n": n, "mean": mean, "sd": sd,
                     "ci_low": lo, "ci_high": hi, "ci_method": ci_method})
    order = {m: i for i, m in enumerate(dict.fromkeys(clean["model"]))}
    out = pd.DataFrame(rows, columns=["model", "layer_index", "n", "mean", "sd", "ci_low", "ci_high", "ci_method"])
    if len(out):
        out = out.sort_values(["model", "layer_index"], key=lambda s: s.map(order) if s.name == "model" else s)
    return out.reset_index(drop=True)
