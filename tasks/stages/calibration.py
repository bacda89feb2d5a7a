"""The calibration zoo's tasks: one zoo model diagnosed, and MM-SHAP's Monte-Carlo error measured."""
from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.stats import calibration
from tasks.adapters.zoo.calibration import ZooModel, load_zoo_model
from tasks.data.synthetic import make_synthetic
from tasks.diagnostics.mm_shap import mm_shap
from tasks.diagnostics.run import diagnose
from tasks.evidence import schema

# Not the zoo's training (1000) or check (1001) data, nor the tests' (7): samples no model has seen.
DATA_SEED = 2024


@task(name="zoo-diagnose", cache_policy=NO_CACHE)
def diagnose_zoo(variant: str, seed: int, samples: int, mm_shap_permutations: int) -> tuple[pd.DataFrame, dict]:
    """Per-sample metrics of one zoo model (trained or loaded) and its training facts."""
    model = load_zoo_model(variant, seed=seed)  # raises ZooTrainingError: a model without its behaviour never enters
    data = make_synthetic(samples, seed=DATA_SEED)
    result = diagnose(model, data, mm_shap_permutations=mm_shap_permutations, keep_maps=0)
    facts = {**{schema.held_out_key(k): v for k, v in model.held_out_accuracy.items()},
             "from_cache": int(model.from_cache), "revision": model.revision}
    return result.per_sample.assign(variant=variant, seed=seed), facts


@task(name="mm-shap-mc-error", cache_policy=NO_CACHE)
def mm_shap_runs(variant: str, seed: int, permutations: list[int], n_samples: int,
                 repeats: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MM-SHAP of a few samples at each permutation count, repeated with different sampling seeds.

    Returns the runs (for ``calibration.mc_error``) and each sample's credit
    concentration at the largest count (for the balanced model's explanation).
    """
    model: ZooModel = load_zoo_model(variant, seed=seed)
    data = make_synthetic(n_samples, seed=DATA_SEED)
    images, captions, ids = [s.image for s in data], [s.caption for s in data], [s.sample_id for s in data]
    rows, spread = [], []
    for perms in permutations:
        for repeat in range(repeats):
            r = mm_shap(model, images, captions, ids, permutations=perms, seed=repeat)
            rows.append(pd.DataFrame({"variant": variant, "permutations": perms, "repeat": repeat, "sample_id": ids,
                                      "mm_shap_v": r.v.numpy(), "mm_shap_se": r.se.numpy()}))
            if perms == max(permutations):
                spread += [calibration.credit_concentration(pi.numpy(), pt.numpy())
                           for pi, pt in zip(r.phi_image, r.phi_text)]
    return pd.concat(rows, ignore_index=True), pd.DataFrame(spread).assign(variant=variant)
