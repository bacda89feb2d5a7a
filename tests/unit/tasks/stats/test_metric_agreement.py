import numpy as np

from tasks.stats.metric_agreement import compare


def test_cancelling_players_inflate_mm_shap_and_the_signed_share_agrees_with_the_verdict_metric():
    # additive model: exact image share 0.71; MM-SHAP's absolute sums say 0.83, the signed sums agree with 0.71
    a = compare(np.full(4, 0.71), np.full(4, 0.83), np.full(4, 0.71), np.full(4, 0.29), np.full(4, 0.71), 0.8)
    assert a.disagree and "inflates a modality whose players cancel" in a.why
    assert a.signed_share_mean == 0.71 and a.sum_text_mean == 0.29


def test_agreement_and_missing_mm_shap():
    assert not compare([0.9], [0.95], [0.9], [0.1], [0.9], 0.8).disagree
    assert not compare([0.9], [np.nan], [np.nan], [np.nan], [np.nan], 0.8).disagree
