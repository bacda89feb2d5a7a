import math

import torch

from tasks.diagnostics.ablation import ablation_visual_share


def _share(full, image_only, text_only):
    return ablation_visual_share(torch.tensor([full]), torch.tensor([image_only]), torch.tensor([text_only])).item()


def test_a_text_only_model_loses_nothing_without_the_image():
    assert _share(3.0, 1.0, 3.0) == 0.0   # v(∅_I, T) = v(I, T)


def test_an_image_only_model_gets_share_one():
    assert _share(3.0, 3.0, -1.0) == 1.0


def test_an_and_gate_splits_evenly_and_signs_do_not_cancel():
    assert _share(4.0, 0.0, 0.0) == 0.5
    # removing the image lowers the score by 1, removing the text raises it by 3
    assert math.isclose(_share(2.0, 5.0, 1.0), 1 / 4)


def test_undefined_when_neither_ablation_moves_the_score():
    assert math.isnan(_share(2.0, 2.0, 2.0))
