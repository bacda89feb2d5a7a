"""The fusion net's initial weights: every tensor written, from the given generator alone, by PyTorch's default rules."""
import math

import pytest
import torch

from tasks.training.config import ModelConfig
from tasks.training.model import ModalityFusionNet


@pytest.mark.parametrize("layers, fusion_depth", [(2, 1), (2, 2)])
def test_initialised_writes_every_tensor_as_the_seeded_constructor_did(layers, fusion_depth):
    config = ModelConfig(layers=layers, fusion_depth=fusion_depth, dim=16, heads=2)
    net = ModalityFusionNet._shapes(config)
    for t in net.state_dict().values():
        t.fill_(math.nan)  # whatever _initialise leaves unwritten stays NaN
    net._initialise(torch.Generator().manual_seed(7))
    torch.manual_seed(7)
    legacy = ModalityFusionNet(config).state_dict()  # the constructor's own draws from the global generator
    assert net.state_dict().keys() == legacy.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in legacy.items())
