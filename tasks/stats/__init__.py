"""Statistics: pure functions from scores to summaries, verdicts, comparisons and the one gate decision.

No Prefect, no MLflow (conventions: ``base``). One module per job:

- ``table``: load and validate a scores table (``load_scores``, ``ScoresTableError``);
- ``analysis``: ``analyze``, the whole analysis of a table (every per-model result and pairwise comparison);
- ``per_model``: one model x metric: ``summarize``, ``collapse_verdict``, ``tost``, ``balance_call``;
- ``comparisons``: models on the same samples (``paired_comparison``) and Holm's correction (``holm``);
- ``inference``: the building blocks: bootstrap CI of the mean, Wilcoxon and sign-flip tests, power, Cohen's d CI;
- ``reliance``: per-sample reliance, the exact tests valid at zero variance;
- ``layer_models``: per-layer scores: the mixed-effects model and per-layer profiles;
- ``gates``: ``decide``, the one GO / PIVOT / NEED_MORE_DATA decision;
- ``controls``: the planted direction of each calibration model and whether the verdict found it;
- ``calibration``: which metric finds planted collapse on the zoo, and which invents it;
- ``metric_agreement``: MM-SHAP beside the verdict metric;
- ``figures``: the forest plot and the per-sample share histogram;
- ``base``: what they share: the loggable result, NaN, a cleaned sample, zero variance.
"""
