"""Gradient flow: a frozen pathway shows zero gradient; a stalled pathway is found with its step."""
import pandas as pd
import torch

from tasks.training import gradient_flow
from tasks.training.config import TrainConfig
from tasks.training.data import make_task
from tasks.training.losses import balanced_loss
from tasks.training.train import build, train

TINY = TrainConfig.model_validate({"model": {"layers": 2, "fusion_depth": 1, "dim": 16, "heads": 2},
                                   "recipe": {"steps": 6, "batch_size": 16, "log_every": 2, "checkpoint_every": 3}})


def test_frozen_image_pathway_has_zero_gradient_in_training():
    result = train(TINY, make_task(64, 5, 0.9), seed=0, device="cpu", freeze=("image",))
    image = result.grads[result.grads["pathway"] == "image"]
    assert len(image) and (image["norm"] == 0).all()
    assert (result.grads[result.grads["pathway"] == "text"]["norm"] > 0).all()
    assert result.facts["gradflow/image/nonzero_frac"] == 0 and result.facts["trainable/image"] == 0


def test_lambda_zero_head_gets_no_gradient_and_positive_lambda_does():
    net = build(TINY, seed=0)
    task = make_task(16, 5, 0.9)
    from tasks.training.data import as_tensors

    d = as_tensors(task, 32, 8, 8)
    for weight, expect in ((0.0, False), (0.5, True)):
        net.zero_grad(set_to_none=True)
        loss = balanced_loss(net.forward_parts(d.raw, d.ids, d.padding), d.targets, weight, 0.0, 0.1)
        loss["total"].backward()
        got = net.aux_image[1].weight.grad
        assert (got is not None and bool(got.abs().sum() > 0)) is expect


def test_summary_finds_the_step_a_pathway_stops_learning():
    steps = list(range(0, 100, 10))
    frame = pd.DataFrame([{"step": s, "pathway": "image", "layer": "embed", "norm": 1.0 if s < 50 else 0.01} for s in steps]
                         + [{"step": s, "pathway": "text", "layer": "embed", "norm": 1.0} for s in steps])
    out = gradient_flow.summarise(frame)
    assert out["gradflow/image/stall_step"] == 50 and out["gradflow/text/stall_step"] == -1
    assert abs(out["gradflow/image/final_ratio"] - 0.01) < 1e-9


def test_norms_are_zero_where_no_gradient_arrived():
    layer = torch.nn.Linear(2, 1)
    assert gradient_flow.norms({"image": [("embed", list(layer.parameters()))]}) == {("image", "embed"): 0.0}
