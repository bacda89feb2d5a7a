"""OGM-GE: the dominant modality's coefficient is 1 − tanh(α·ρ), the other's 1; modulation scales and adds noise."""
import math

import torch

from tasks.training import ogm_ge


def test_coefficients_slow_only_the_dominant_modality():
    k = ogm_ge.coefficients(s_image=10.0, s_text=40.0, alpha=0.5)
    assert k["image"] == 1.0 and math.isclose(k["text"], 1 - math.tanh(0.5 * 4.0))
    k = ogm_ge.coefficients(s_image=30.0, s_text=10.0, alpha=0.5)
    assert k["text"] == 1.0 and math.isclose(k["image"], 1 - math.tanh(1.5))


def test_modulate_scales_the_dominant_pathway_and_leaves_the_other():
    a, b = torch.nn.Parameter(torch.ones(50)), torch.nn.Parameter(torch.ones(50))
    a.grad, b.grad = torch.linspace(-1, 1, 50), torch.linspace(-1, 1, 50)
    before = b.grad.clone()
    ogm_ge.modulate({"image": [("embed", [a])], "text": [("embed", [b])]}, {"image": 1.0, "text": 0.1},
                    torch.Generator().manual_seed(0))
    assert torch.equal(a.grad, torch.linspace(-1, 1, 50))
    noise = b.grad - 0.1 * before
    assert 0.2 < float(noise.std()) < 1.0  # GE noise ~ N(0, std of the gradient)
