"""Per-layer statistics: the mixed model against statsmodels and a balanced-design known answer,
convergence reporting, and the per-layer CI table against scipy."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats as sps

from tasks.stats import inference
from tasks.stats.layer_models import LayerMixedModel, fit_layer_model, layer_profile, validate_layer_frame

N_SAMPLES, LAYERS = 24, 5
MODEL_EFFECT = {"m-a": 0.0, "m-b": 0.08}


def _frame(seed: int = 0, sample_sd: float = 0.05, noise_sd: float = 0.02, models=("m-a", "m-b")) -> pd.DataFrame:
    """Complete, balanced design: every sample under every model and layer.

    score = 0.4 + model effect + 0.03 * layer + sample intercept + noise.
    """
    rng = np.random.default_rng(seed)
    u = rng.normal(0, sample_sd, N_SAMPLES)
    rows = [(m, f"s{s}", layer, 0.4 + MODEL_EFFECT[m] + 0.03 * layer + u[s] + rng.normal(0, noise_sd))
            for m in models for s in range(N_SAMPLES) for layer in range(LAYERS)]
    return pd.DataFrame(rows, columns=["model", "sample_id", "layer_index", "value"])


def _reference(frame: pd.DataFrame, formula: str):
    data = frame.rename(columns={"value": "score", "layer_index": "layer"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return smf.mixedlm(formula, data, groups=data["sample_id"]).fit(reml=True)


def test_matches_statsmodels_mixedlm_called_directly():
    frame = _frame()
    fit = fit_layer_model(frame)
    assert isinstance(fit, LayerMixedModel)
    assert fit.formula == "score ~ C(model) + C(layer)" and fit.groups == "sample_id" and fit.method == "REML"
    # statsmodels on the raw scale (fit_layer_model fits score / SD and scales
    # back): the same REML optimum up to the optimizer's tolerance.
    ref = _reference(frame, fit.formula)
    assert fit.fixed_effects["coef"].to_numpy() == pytest.approx(ref.fe_params.to_numpy(), rel=1e-6)
    assert fit.fixed_effects["se"].to_numpy() == pytest.approx(ref.bse_fe.to_numpy(), rel=1e-6)
    assert fit.fixed_effects["p"].to_numpy() == pytest.approx(ref.pvalues[ref.fe_params.index].to_numpy(), rel=1e-5)
    ci = ref.conf_int().loc[ref.fe_params.index]
    assert fit.fixed_effects["ci_low"].to_numpy() == pytest.approx(ci[0].to_numpy(), rel=1e-6)
    assert fit.group_variance == pytest.approx(float(ref.cov_re.iloc[0, 0]), rel=1e-6)
    assert fit.residual_variance == pytest.approx(ref.scale, rel=1e-6)
    assert fit.log_likelihood == pytest.approx(ref.llf, rel=1e-9)
    assert fit.response_sd == pytest.approx(frame["value"].std(ddof=1), rel=1e-12)
    # On the raw scale statsmodels calls this fit "on the boundary" only
    # because the group variance (~0.002) is below its absolute 0.01; the
    # standardised fit has no such artefact.
    assert fit.converged is True and fit.reliable and fit.warnings == () and fit.error == ""
    assert (fit.n_obs, fit.n_groups, fit.n_models, fit.n_layers) == (2 * N_SAMPLES * LAYERS, N_SAMPLES, 2, LAYERS)
    assert fit.reference == {"model": "m-a", "layer": "0"}


def test_balanced_design_coefficients_are_differences_of_means():
    # In a complete balanced design with a random intercept per sample, GLS
    # fixed effects equal OLS ones whatever the variance estimates, i.e. the
    # marginal mean differences -- a known answer independent of the optimizer.
    frame = _frame(seed=1)
    fe = fit_layer_model(frame).fixed_effects["coef"]
    by_model = frame.groupby("model")["value"].mean()
    by_layer = frame.groupby("layer_index")["value"].mean()
    assert fe["C(model)[T.m-b]"] == pytest.approx(by_model["m-b"] - by_model["m-a"], abs=1e-10)
    for layer in range(1, LAYERS):
        assert fe[f"C(layer)[T.{layer}]"] == pytest.approx(by_layer[layer] - by_layer[0], abs=1e-10)
    # and the planted effects are recovered within a few standard errors
    fit = fit_layer_model(frame)
    assert abs(fe["C(model)[T.m-b]"] - 0.08) < 4 * fit.fixed_effects.loc["C(model)[T.m-b]", "se"]
    assert abs(fe["C(layer)[T.4]"] - 0.12) < 4 * fit.fixed_effects.loc["C(layer)[T.4]", "se"]


def test_term_tests_are_joint_wald_tests():
    frame = _frame()
    fit = fit_layer_model(frame)
    ref = _reference(frame.assign(value=frame["value"] / fit.response_sd), fit.formula)  # the scale it fits on
    names = list(ref.fe_params.index)
    layer_idx = [i for i, n in enumerate(names) if n.startswith("C(layer)[")]
    b = ref.fe_params.to_numpy()[layer_idx]
    cov = ref.cov_params().to_numpy()[np.ix_(layer_idx, layer_idx)]
    chi2 = float(b @ np.linalg.solve(cov, b))  # Wald statistic by hand
    assert fit.term_tests.loc["C(layer)", "chi2"] == pytest.approx(chi2, rel=1e-8)
    assert fit.term_tests.loc["C(layer)", "df"] == LAYERS - 1
    assert fit.term_tests.loc["C(layer)", "p"] == pytest.approx(sps.chi2.sf(chi2, LAYERS - 1), rel=1e-8, abs=1e-300)
    assert fit.term_tests.loc["C(model)", "p"] < 1e-10
    d = fit.as_dict("layers/")
    assert d["layers/converged"] == 1 and d["layers/reliable"] == 1
    assert d["layers/coef_C_model__T.m-b"] == pytest.approx(fit.fixed_effects.loc["C(model)[T.m-b]", "coef"])
    assert fit.as_params()["formula"] == fit.formula


def test_one_model_uses_the_layer_only_formula():
    frame = _frame(models=("m-a",))
    fit = fit_layer_model(frame)
    assert fit.formula == "score ~ C(layer)" and fit.n_models == 1
    ref = _reference(frame, "score ~ C(layer)")
    assert fit.fixed_effects["coef"].to_numpy() == pytest.approx(ref.fe_params.to_numpy(), rel=1e-6)
    assert list(fit.term_tests.index) == ["C(layer)"]


def test_non_convergence_and_warnings_are_reported_not_raised():
    # No between-sample variance at all: the REML optimum is on the boundary
    # (group variance 0), which statsmodels flags with warnings and, for this
    # data, a failed convergence.
    frame = _frame(seed=3, sample_sd=0.0, noise_sd=0.1)
    fit = fit_layer_model(frame)
    ref = _reference(frame, fit.formula)
    assert fit.converged == bool(ref.converged)
    assert fit.converged is False  # every statsmodels optimizer gives up on this data
    assert fit.warnings and any("ConvergenceWarning" in w for w in fit.warnings)
    assert not fit.reliable
    assert fit.as_dict()["n_warnings"] == len(fit.warnings)
    assert "ConvergenceWarning" in fit.as_params()["warnings"]


def test_impossible_fit_returns_error():
    frame = _frame()
    fit = fit_layer_model(frame[frame["sample_id"] == "s0"])
    assert fit.error.startswith("ValueError: 1 sample(s)") and not fit.converged and not fit.reliable
    assert math.isnan(fit.group_variance) and fit.fixed_effects.empty
    flat = fit_layer_model(frame.assign(value=0.5))
    assert "zero variance" in flat.error and not flat.reliable


def test_non_finite_values_are_dropped_and_counted():
    frame = _frame()
    frame.loc[[0, 5], "value"] = [np.nan, np.inf]
    fit = fit_layer_model(frame)
    assert fit.n_dropped == 2 and fit.n_obs == 2 * N_SAMPLES * LAYERS - 2


def test_validation_messages():
    frame = _frame()
    with pytest.raises(ValueError, match=r"missing column\(s\) \['layer_index'\].*fix:"):
        validate_layer_frame(frame.drop(columns=["layer_index"]))
    bad = frame.assign(layer_index=frame["layer_index"].astype(float))
    bad.loc[3, "layer_index"] = 1.5
    with pytest.raises(ValueError, match="row 3: layer_index 1.5 is not an integer"):
        validate_layer_frame(bad)
    with pytest.raises(ValueError, match="duplicated"):
        validate_layer_frame(pd.concat([frame, frame.iloc[:1]]))


def test_layer_profile_t_intervals_match_scipy():
    frame = _frame()
    prof = layer_profile(frame)
    assert len(prof) == 2 * LAYERS
    assert prof[["model", "layer_index"]].iloc[0].tolist() == ["m-a", 0]
    assert prof[["model", "layer_index"]].iloc[-1].tolist() == ["m-b", LAYERS - 1]
    row = prof[(prof["model"] == "m-b") & (prof["layer_index"] == 2)].iloc[0]
    x = frame[(frame["model"] == "m-b") & (frame["layer_index"] == 2)]["value"].to_numpy()
    lo, hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert (row["n"], row["ci_method"]) == (N_SAMPLES, "t")
    assert row["mean"] == pytest.approx(x.mean(), rel=1e-12)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), rel=1e-12)


def test_layer_profile_bca_matches_the_summary_bootstrap():
    frame = _frame()
    prof = layer_profile(frame, method="bca", n_resamples=999, seed=2)
    row = prof.iloc[3]
    x = frame[(frame["model"] == row["model"]) & (frame["layer_index"] == row["layer_index"])]["value"]
    assert (row["ci_low"], row["ci_high"], row["ci_method"]) == inference.bootstrap_mean_ci(x.to_numpy(), 0.95, 999, 2)
    with pytest.raises(ValueError, match="use 't' or 'bca'"):
        layer_profile(frame, method="percentile")


def test_layer_profile_degenerate_cells():
    frame = pd.DataFrame({"model": ["a", "a", "a"], "sample_id": ["1", "2", "1"], "layer_index": [0, 0, 1],
                          "value": [0.3, 0.3, 0.4]})
    prof = layer_profile(frame)
    assert prof["ci_method"].tolist() == ["degenerate", "none"]
    assert prof["ci_low"].iloc[0] == prof["ci_high"].iloc[0] == 0.3
    assert math.isnan(prof["ci_low"].iloc[1])
