"""Extraction: image-token states at named points through the adapters, streamed to disk and cached."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.adapters.contract import ModelSpec
from tasks.adapters.registry import get_adapter
from tasks.probing.extract import extract
from tasks.probing.ground_truth import screening_set
from tasks.probing.points import pool, states

LLAVA_TINY = (("text_config.hidden_size", 64), ("text_config.intermediate_size", 128), ("text_config.num_hidden_layers", 2),
              ("text_config.num_attention_heads", 4), ("text_config.num_key_value_heads", 2), ("text_config.vocab_size", 256),
              ("vision_config.hidden_size", 32), ("vision_config.intermediate_size", 64), ("vision_config.num_hidden_layers", 2),
              ("vision_config.num_attention_heads", 4), ("vision_config.image_size", 32), ("vision_config.patch_size", 8))


def _zoo(variant: str = "keeps"):
    return get_adapter("zoo-spatial").load(ModelSpec(f"zoo-spatial-{variant}", "zoo-spatial", variant))


def test_pool_mean_and_tokens():
    t = torch.arange(12, dtype=torch.float32).view(4, 3)
    assert np.allclose(pool(t, "mean", 2), [4.5, 5.5, 6.5])
    assert np.allclose(pool(t, "tokens", 2), [1.5, 2.5, 3.5, 7.5, 8.5, 9.5])


def test_extraction_streams_to_disk_and_is_cached(tmp_path):
    data = screening_set(20, seed=0)
    model = _zoo()
    keys = ("vision", "projector", "lm.1")
    first = extract(model, "zoo-spatial", "z", data.samples, keys, "tokens", 4, batch_size=6, data_hash=data.content_hash,
                    root=tmp_path)
    assert not first.cached and first.n == 20
    x = first.load("lm.1")
    assert isinstance(x, np.memmap) and x.shape == (20, 4 * 64)
    # batch boundaries do not change a sample's row
    one = extract(model, "zoo-spatial", "z", data.samples, keys, "tokens", 4, batch_size=20, data_hash="other", root=tmp_path)
    assert np.allclose(one.load("lm.1"), x, atol=1e-5)
    again = extract(model, "zoo-spatial", "z", data.samples, keys, "tokens", 4, batch_size=6, data_hash=data.content_hash,
                    root=tmp_path)
    assert again.cached and again.folder == first.folder
    assert not list(tmp_path.glob("*.partial"))


def test_destroying_projector_keeps_the_token_set_but_not_the_order():
    data = screening_set(4, seed=0, empty_fraction=0.0)
    keeps, destroys = _zoo("keeps"), _zoo("destroys")
    inputs = keeps.prepare([s.image for s in data.samples], [s.caption for s in data.samples], ["a", "b", "c", "d"])
    k, d = keeps.states(inputs)["projector"], destroys.states(inputs)["projector"]
    assert torch.allclose(k.sort(dim=1).values, d.sort(dim=1).values, atol=1e-5)  # same tokens
    assert not torch.allclose(k, d)                                                # another order


def test_llava_points_are_hooked_at_the_image_tokens():
    spec = ModelSpec("tiny-llava", "llava", "", allow_random_init=True, random_init_config=LLAVA_TINY)
    model = get_adapter("llava").load(spec)
    data = screening_set(3, seed=0)
    inputs = model.prepare([s.image for s in data.samples], [s.caption for s in data.samples], ["a", "b", "c"])
    got = states(model, "llava", inputs, {"vision", "projector", "lm.0", "lm.1"})
    n_image = int(inputs.meta["image"][0].sum())
    assert n_image == 16
    assert [tuple(t.shape) for t in got["vision"]] == [(16, 32)] * 3          # CLIP patches, CLS dropped
    assert [tuple(t.shape) for t in got["projector"]] == [(16, 64)] * 3       # in the LM's width
    assert not torch.allclose(got["lm.0"][0], got["lm.1"][0])
    # the projector point is the projector applied to the vision point
    projected = model.model.model.multi_modal_projector(got["vision"][0][None])[0]
    assert torch.allclose(projected, got["projector"][0], atol=1e-5)


@pytest.mark.parametrize("variant", ["keeps", "destroys"])
def test_zoo_adapter_rejects_unknown_options(variant):
    with pytest.raises(ValueError, match="takes only seed"):
        get_adapter("zoo-spatial").load(ModelSpec("z", "zoo-spatial", variant, random_init_config=(("dim", 3),)))
