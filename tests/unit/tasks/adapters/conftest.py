"""What the per-adapter tests share, so that each test file holds only its model's specifics.

The behaviour every adapter owes (load, score, mask, trace of its smoke model) is checked once, over the
registry, by test_contract.py. A model's own test module names its adapter class in an ``adapter``
fixture; ``smoke_spec`` then makes specs of that class's smoke config and ``model`` opens it once per
module (random weights, on the CPU). Image–caption models get ``inputs``: ``captions`` with random images.
Helpers that are not fixtures come as fixtures returning the function (test folders are not packages).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
import torch
from PIL import Image
from torch import nn

from tasks.adapters.contract import ModelSpec
from tasks.data.synthetic import make_synthetic


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """An empty Hugging Face hub cache, offline (its path): the test sees only what it lays out itself."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


@pytest.fixture(scope="module")
def smoke_spec(adapter):
    """``smoke_spec(source="", random=True)``: a spec of the ``adapter`` class's smoke config at ``source``."""

    def spec(source: str = "", random: bool = True) -> ModelSpec:
        return ModelSpec(name=f"tiny-{adapter.name}", adapter=adapter.name, source=source, allow_random_init=random,
                         random_init_config=adapter.smoke.random_init_config)

    return spec


@pytest.fixture(scope="module")
def model(adapter, smoke_spec):
    """The adapter's smoke model with random weights, on the CPU."""
    return adapter(device="cpu").load(smoke_spec())


@pytest.fixture(scope="session")
def random_images():
    """``random_images(sizes)``: RGB noise images of the (height, width) ``sizes``, the same on every call."""

    def draw(sizes: list[tuple[int, int]]) -> list[Image.Image]:
        gen = torch.Generator().manual_seed(0)
        return [Image.fromarray((torch.rand(h, w, 3, generator=gen) * 255).byte().numpy()) for h, w in sizes]

    return draw


@pytest.fixture
def captions() -> list[str]:
    return ["a red square on the left", "a blue circle"]


@pytest.fixture
def inputs(model, captions, random_images):
    """``captions``, each with a random 40×48 image, prepared by ``model``."""
    return model.prepare(random_images([(40, 48)] * len(captions)), captions, [f"s{i}" for i in range(len(captions))])


@pytest.fixture(scope="session")
def synthetic_samples():
    """``synthetic_samples(second_size)``: (images, captions, ids) of three synthetic 32-px samples, the second
    image resized to ``second_size`` (width, height) so that the batch mixes image token counts."""

    def samples(second_size: tuple[int, int]) -> tuple[list, list[str], list[str]]:
        data = make_synthetic(3, seed=0, image_size=32)
        images = [s.image for s in data]
        images[1] = images[1].resize(second_size)
        return images, [s.caption for s in data], [s.sample_id for s in data]

    return samples


def _trace_with_maps(model, inputs, modules: Mapping[str, nn.Module], **trace_kw):
    """``model.trace(inputs, **trace_kw)`` and the attention probabilities (``out[1]``) each of ``modules``
    returned during it, by name, in the order the modules ran."""
    maps: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _a, out, name=name: maps.__setitem__(name, out[1].detach().clone()))
               for name, m in modules.items()]
    try:
        summary = model.trace(inputs, **trace_kw)
    finally:
        for h in handles:
            h.remove()
    return summary, maps


@pytest.fixture(scope="session")
def trace_with_maps():
    """``trace_with_maps(model, inputs, modules, **trace_kw) -> (summary, maps)``, see ``_trace_with_maps``."""
    return _trace_with_maps


@pytest.fixture(scope="session")
def lm_shares_follow_attention():
    """``lm_shares_follow_attention(model, inputs) -> summary``: asserts that a generative model's trace has one
    layer per LM layer whose visual share is the mass the caption rows and the scored position put on the
    image tokens, recomputed from the LM's own attention maps, and returns the summary."""

    def check(model, inputs):
        attention = {n: m for n, m in model.model.named_modules()
                     if n.startswith("model.language_model.layers") and n.endswith("self_attn")}
        summary, maps = _trace_with_maps(model, inputs, attention)
        b = len(inputs)
        assert summary.layer_names == ["lm.0", "lm.1"] and summary.visual_share.shape == (b, 2)
        meta = inputs.meta
        rows = meta["caption"].clone()
        rows[torch.arange(b), meta["last"]] = True
        for layer, probs in enumerate(maps.values()):
            assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
            mean = probs.mean(1)
            for i in range(b):
                r = mean[i][rows[i]]
                expected = (r[:, meta["image"][i]].sum(-1) / r.sum(-1)).mean().item()
                assert math.isclose(summary.visual_share[i, layer].item(), expected, rel_tol=1e-4)
        assert ((summary.visual_share >= 0) & (summary.visual_share + summary.text_share <= 1 + 1e-6)).all()
        return summary

    return check


@pytest.fixture(scope="session")
def yes_no_scores():
    """``yes_no_scores(model, inputs, samples) -> scores``: asserts that a generative model's scores are the log-odds
    of "Yes" against "No" at each sample's scored position of one full forward, and that each sample scored alone
    gets the same score (``inputs`` prepared from ``samples``)."""

    def check(model, inputs, samples):
        scores = model.score(inputs)
        with torch.no_grad():
            logits = model.model(**inputs.tensors).logits
        rows, last = torch.arange(len(inputs)), inputs.meta["last"]
        expected = logits[rows, last, model.yes_id] - logits[rows, last, model.no_id]
        assert scores.shape == (len(inputs),) and torch.allclose(scores, expected, atol=1e-5)
        alone = torch.cat([model.score(model.prepare([im], [c], [s])) for im, c, s in zip(*samples)])
        assert torch.allclose(scores, alone, atol=1e-5)
        return scores

    return check
