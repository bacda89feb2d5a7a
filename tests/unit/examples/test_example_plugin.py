"""The example plugin installs like any team's adapter and is found through its entry point.

The package is really built and installed (uv, else pip) into a temporary
target folder that is put on sys.path only inside ``plugin_on_path``, so the
rest of the session never sees it (tests/conftest.py). The adapter contract
itself (load, score, mask, trace) is checked by tests/unit/tasks/adapters/test_contract.py.
"""
import importlib
import math
import sys
from pathlib import Path

import pytest
import torch

from tasks.adapters.contract import AttentionSummary, LoadedModel, ModelSpec, WeightsUnavailable
from tasks.adapters.registry import available, get_adapter
from tasks.data.synthetic import make_synthetic

PLUGIN_SRC = Path(__file__).resolve().parents[3] / "examples" / "fusionaudit-example-plugin"
MODULE = "fusionaudit_example_plugin"


@pytest.fixture(scope="module")
def target(install_example) -> Path:
    return install_example(PLUGIN_SRC)


@pytest.fixture
def plugin(target, plugin_on_path):
    with plugin_on_path(target):
        yield importlib.import_module(MODULE)


@pytest.fixture
def samples():
    return make_synthetic(4, seed=11)


def _prepare(model, samples):
    return model.prepare([s.image for s in samples], [s.caption for s in samples], [s.sample_id for s in samples])


def _spec(source, **kw) -> ModelSpec:
    return ModelSpec(name="inhouse-v2", adapter="inhouse-v2", source=str(source), **kw)


def test_registry_lists_the_installed_plugin(plugin, target):
    assert available()["inhouse-v2"] == "fusionaudit_example_plugin:InHouseV2Adapter"
    assert Path(plugin.__file__).is_relative_to(target)  # the installed copy, not the source tree
    adapter = get_adapter("inhouse-v2")
    assert adapter.name == "inhouse-v2" and adapter.capabilities == {"score", "mask", "trace"}


def test_loaded_model_scores_and_traces(plugin, tmp_path, samples):
    checkpoint = tmp_path / "v2.pt"
    plugin.save_checkpoint(checkpoint, seed=3)
    model = get_adapter("inhouse-v2").load(_spec(checkpoint))
    assert isinstance(model, LoadedModel) and model.random_init is False
    assert model.revision.startswith("v2.pt@sha256:")
    inputs = _prepare(model, samples)
    scores = model.score(inputs)
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    again = get_adapter("inhouse-v2").load(_spec(checkpoint)).score(_prepare(model, samples))
    assert torch.equal(scores, again)  # the checkpoint, not fresh random weights

    summary = model.trace(inputs)
    assert isinstance(summary, AttentionSummary)
    assert summary.layer_names == ["layer0", "layer1"] and summary.visual_share.shape == (4, 2)
    assert summary.n_image_tokens == 16 and summary.spans.image == (1, 17)
    assert summary.n_text_per_sample.tolist() == [len(s.caption.split()) for s in samples]
    total = summary.visual_share + summary.text_share
    assert ((summary.visual_share > 0) & (total < 1)).all()  # the rest of each row goes to [CLS]


def test_trace_of_uniform_attention_is_known(plugin, tmp_path, samples):
    """Zero query/key weights make every row uniform over its unpadded keys: shares are token counts."""
    model = get_adapter("inhouse-v2").load(_spec(tmp_path / "absent.pt", allow_random_init=True))
    for layer in model.net.layers:
        torch.nn.init.zeros_(layer.attn.qkv.weight)
        torch.nn.init.zeros_(layer.attn.qkv.bias)
    captions = ["a red circle", "a big blue square on the left"]
    inputs = model.prepare([s.image for s in samples[:2]], captions, ["a", "b"])
    summary = model.trace(inputs)
    for row, words in enumerate((3, 7)):
        keys = 1 + 16 + words
        assert torch.allclose(summary.visual_share[row], torch.tensor(16 / keys))
        assert torch.allclose(summary.text_share[row], torch.tensor(words / keys))
        entropy = math.log(keys) / math.log(1 + 16 + 16)  # normalised by the full sequence length
        assert torch.allclose(summary.entropy_text[row], torch.tensor(entropy))


def test_mask_replaces_a_modality_without_touching_the_input(plugin, tmp_path, samples):
    model = get_adapter("inhouse-v2").load(_spec(tmp_path / "absent.pt", allow_random_init=True))
    inputs = _prepare(model, samples)
    before = {k: v.clone() for k, v in inputs.tensors.items()}
    no_image = model.mask(inputs, image_keep=False, text_keep=True)
    no_text = model.mask(inputs, image_keep=True, text_keep=False)
    assert (no_image.tensors["patches"] == 0).all()
    ids = no_text.tensors["token_ids"]
    assert set(ids.unique().tolist()) <= {0, 1}  # [PAD] stays [PAD], every word became [MASK]
    assert all(torch.equal(before[k], inputs.tensors[k]) for k in before)
    full = model.score(inputs)
    assert not torch.allclose(model.score(no_image), full) and not torch.allclose(model.score(no_text), full)
    assert torch.equal(model.score(model.mask(inputs, True, True)), full)


def test_missing_checkpoint_is_located_and_blocks(plugin, tmp_path):
    adapter = get_adapter("inhouse-v2")
    absent = tmp_path / "nowhere" / "v2.pt"
    assert adapter.locate(_spec(absent)) == (False, [str(absent)])
    with pytest.raises(WeightsUnavailable, match="V2 checkpoint .*v2.pt does not exist") as info:
        adapter.load(_spec(absent))
    assert info.value.searched == [str(absent)] and "--allow-random-init" in info.value.mitigation
    random = adapter.load(_spec(absent, allow_random_init=True, random_init_config=(("layers", 1), ("seed", 2))))
    assert random.random_init and random.revision == "random-init-seed2" and len(random.net.layers) == 1
    with pytest.raises(ValueError, match=r"\['depth'\] are not V2Config fields"):
        adapter.load(_spec(absent, allow_random_init=True, random_init_config=(("depth", 1),)))


def test_plugin_is_gone_after_cleanup(target, plugin_on_path):
    with plugin_on_path(target):
        assert "inhouse-v2" in available()
    assert "inhouse-v2" not in available()
    assert MODULE not in sys.modules
