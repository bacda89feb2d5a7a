"""Every registered adapter against the contract of tasks/adapters/contract.py (captum's pattern).

Each adapter carries a tiny ``smoke`` model of its architecture. This module opens it for every
adapter of the registry — the built-in ones, installed plugins, and the plugins under examples/
(built and installed for the session) — and checks what the diagnostics rely on: load, one
finite score per pair, masking either modality, and, where an adapter declares them, token
masking, the separable towers, attention summaries, rollout, relevance and attention maps.
Missing weights must make a model Blocked (``WeightsUnavailable``) with the places looked and the
fix. An adapter's own test file then holds only its specifics.
"""
from __future__ import annotations

import time
import tomllib
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from tasks.adapters.contract import AttentionSummary, Inputs, LoadedModel, Players, Smoke, WeightsUnavailable
from tasks.adapters.registry import available, get_adapter
from tasks.data.synthetic import make_synthetic

EXAMPLES = Path(__file__).resolve().parents[4] / "examples"
CAPABILITIES = {"score", "mask", "trace", "mask_tokens", "separable", "rollout", "relevance", "maps",
                "states"}  # states: hidden states at named extraction points (probing missions, tasks/probing/extract.py)


def _example_plugins() -> dict[str, Path]:
    """Adapter name -> package folder, for every ``fusionaudit.adapters`` entry point under examples/."""
    found = {}
    for pyproject in sorted(EXAMPLES.glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        found |= {name: pyproject.parent for name in project.get("entry-points", {}).get("fusionaudit.adapters", {})}
    return found


EXAMPLE_PLUGINS = _example_plugins()
ADAPTERS = sorted(set(available()) | set(EXAMPLE_PLUGINS))
_LOADED: dict[str, LoadedModel] = {}


@pytest.fixture(params=ADAPTERS)
def name(request, install_example, plugin_on_path):
    """An adapter name, with its example package importable while the test runs."""
    package = EXAMPLE_PLUGINS.get(request.param)
    with plugin_on_path(install_example(package)) if package else nullcontext():
        yield request.param


@pytest.fixture
def adapter(name):
    return get_adapter(name)


@pytest.fixture
def model(name, adapter) -> LoadedModel:
    if not adapter.smoke.loads:
        pytest.skip(f"{name}: random weights cannot stand in (only the Blocked path is checked)")
    if name not in _LOADED:  # one smoke model per adapter and session
        _LOADED[name] = adapter.load(adapter.smoke.spec(name))
    return _LOADED[name]


@pytest.fixture
def inputs(model) -> Inputs:
    samples = make_synthetic(2, seed=5)
    return model.prepare([s.image for s in samples], [s.caption for s in samples], [s.sample_id for s in samples])


def _needs(model: LoadedModel, capability: str) -> None:
    if capability not in model.capabilities:
        pytest.skip(f"{model.spec.adapter} does not declare {capability!r}")


def _unchanged(inputs: Inputs):
    """A snapshot of the tensors; call it again to check that nothing changed them in place."""
    before = {k: v.clone() for k, v in inputs.tensors.items()}
    return lambda: all(torch.equal(before[k], inputs.tensors[k]) for k in before)


# ------------------------------------------------------------------ the adapter itself


def test_adapter_declares_name_family_capabilities_and_smoke(name, adapter):
    assert adapter.name == name
    assert isinstance(adapter.family, str) and adapter.family
    assert isinstance(adapter.capabilities, frozenset) and "score" in adapter.capabilities
    assert adapter.capabilities <= CAPABILITIES, adapter.capabilities - CAPABILITIES
    assert isinstance(adapter.smoke, Smoke)


def test_missing_weights_are_blocked_with_the_places_looked_and_the_fix(name, adapter, tmp_path):
    if not adapter.smoke.weights:
        pytest.skip(f"{name} builds its own weights: nothing can be missing")
    absent = tmp_path / "no-weights-here"
    spec = adapter.smoke.spec(name, source=str(absent), allow_random_init=False)
    present, searched = adapter.locate(spec)
    assert present is False and searched
    with pytest.raises(WeightsUnavailable) as err:
        adapter.load(spec)
    assert str(absent) in " ".join(err.value.searched) and err.value.mitigation
    if not adapter.smoke.loads:  # and random weights do not stand in for it either
        with pytest.raises(WeightsUnavailable):
            adapter.load(adapter.smoke.spec(name))


def test_an_uncached_hub_id_is_blocked_offline_fast(name, adapter, tmp_path, monkeypatch):
    hub_id = adapter.smoke.hub_id
    if hub_id is None:
        pytest.skip(f"{name} does not open hub ids")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = adapter.smoke.spec(name, source=hub_id, allow_random_init=False)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as err:
        adapter.load(spec)
    assert time.monotonic() - start < 5
    folder = str(tmp_path / "hf" / "hub" / f"models--{hub_id.replace('/', '--')}")
    assert folder in err.value.searched
    assert f"hf download {hub_id}" in err.value.mitigation
    present, searched = adapter.locate(spec)
    assert not present and searched[0] == folder


# ------------------------------------------------------------------ the smoke model


def test_loads_the_declared_model(name, adapter, model):
    assert isinstance(model, LoadedModel)
    assert model.spec.adapter == name and model.family == adapter.family
    assert model.capabilities == adapter.capabilities
    assert isinstance(model.random_init, bool) and isinstance(model.revision, str) and model.revision


def test_scores_one_finite_value_per_pair(model, inputs):
    assert len(inputs) == 2 and inputs.sample_ids == ["syn-5-00000", "syn-5-00001"]
    scores = model.score(inputs)
    assert scores.shape == (2,) and scores.dtype.is_floating_point and torch.isfinite(scores).all()
    assert torch.allclose(model.score(inputs), scores, atol=1e-5)  # no state carried between calls


def test_masking_a_modality_changes_the_score_and_keeping_both_does_not(model, inputs):
    _needs(model, "mask")
    unchanged = _unchanged(inputs)
    full = model.score(inputs)
    assert torch.allclose(model.score(model.mask(inputs, image_keep=True, text_keep=True)), full, atol=1e-5)
    for image_keep, text_keep in ((False, True), (True, False)):
        masked = model.score(model.mask(inputs, image_keep=image_keep, text_keep=text_keep))
        assert masked.shape == (2,) and torch.isfinite(masked).all()
        assert not torch.allclose(masked, full), f"image_keep={image_keep}, text_keep={text_keep} left the score as is"
    assert torch.isfinite(model.score(model.mask(inputs, image_keep=False, text_keep=False))).all()  # v(∅)
    assert unchanged(), "mask changed its input in place"


def test_token_masking_keeps_the_score_when_every_player_stays(model, inputs):
    _needs(model, "mask_tokens")
    players = model.players(inputs)
    assert isinstance(players, Players)
    valid = players.text_valid
    assert valid.dtype == torch.bool and valid.shape[0] == 2 and (valid.sum(1) >= 1).all()
    grid = torch.ones(2, 2, 2, dtype=torch.bool)
    assert torch.allclose(model.score(model.mask_tokens(inputs, grid, valid)), model.score(inputs), atol=1e-4)
    none_kept = model.score(model.mask_tokens(inputs, ~grid, torch.zeros_like(valid)))
    assert none_kept.shape == (2,) and torch.isfinite(none_kept).all()


def test_separable_towers_give_the_score_of_the_masked_inputs(model, inputs):
    _needs(model, "separable")
    assert torch.allclose(model.similarity(model.encode_image(inputs, None), model.encode_text(inputs, None)),
                          model.score(inputs), atol=1e-5)
    grid = torch.tensor([[[True, False], [False, True]]] * 2)
    text = model.players(inputs).text_valid.clone()
    text[:, 0] = False
    split = model.similarity(model.encode_image(inputs, grid), model.encode_text(inputs, text))
    assert torch.allclose(split, model.score(model.mask_tokens(inputs, grid, text)), atol=1e-5)
    assert not torch.allclose(split, model.score(inputs))


def test_trace_summarises_every_layer_within_bounds(model, inputs):
    _needs(model, "trace")
    summary = model.trace(inputs)
    assert isinstance(summary, AttentionSummary)
    n_layers = len(summary.layer_names)
    assert n_layers >= 1 and len(set(summary.layer_names)) == n_layers
    per_layer = (summary.visual_share, summary.text_share, summary.entropy_visual, summary.entropy_text)
    for values in per_layer:
        assert values.shape == (2, n_layers)
        finite = values[torch.isfinite(values)]
        assert ((finite >= -1e-6) & (finite <= 1 + 1e-5)).all()
    both = torch.isfinite(summary.visual_share) & torch.isfinite(summary.text_share)
    assert (summary.visual_share[both] + summary.text_share[both] <= 1 + 1e-4).all()
    assert (torch.isfinite(summary.entropy_visual) | torch.isfinite(summary.entropy_text)).any(1).all()
    assert summary.n_image_tokens >= 0 and summary.n_text_tokens >= 1
    if summary.n_text_per_sample is not None:
        counts = summary.n_text_per_sample
        assert counts.shape == (2,) and (counts >= 1).all() and int(counts.max()) == summary.n_text_tokens
    if summary.spans is not None:  # the spans cover the tokens the summary counts
        (i0, i1), (t0, t1) = summary.spans.image, summary.spans.text
        # an empty image span: the image is not in the sequence but reached by cross-attention (IDEFICS)
        assert i1 - i0 in (0, summary.n_image_tokens) and t1 - t0 >= summary.n_text_tokens
        assert i1 <= t0 or t1 <= i0, "image and text spans overlap"
    assert summary.maps == {}  # maps only on request


def test_rollout_is_an_image_share_per_layer(model, inputs):
    _needs(model, "rollout")
    rollout = model.trace(inputs).extras["rollout_visual_share"]
    assert rollout.shape[0] == 2 and torch.isfinite(rollout[:, -1]).all()
    assert ((rollout[:, -1] >= 0) & (rollout[:, -1] <= 1)).all()


def test_relevance_is_an_image_share_per_pair(model, inputs):
    _needs(model, "relevance")
    share = model.relevance(inputs)
    assert share.shape == (2,) and torch.isfinite(share).all() and ((share >= 0) & (share <= 1)).all()


def test_maps_come_only_for_the_samples_asked(model, inputs):
    _needs(model, "maps")
    summary = model.trace(inputs, keep_maps=1)
    assert summary.maps and set(summary.maps) <= set(summary.layer_names)
    for attention in summary.maps.values():
        assert attention.dim() == 3 and attention.shape[0] == 1
