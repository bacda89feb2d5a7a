"""The calibration zoo must show its planted behaviour, or no metric can be trusted.

The three real models train once per test session (~10 s each) into the
session's FUSIONAUDIT_HOME (tests/conftest.py), so later tests reuse them.
"""
import time
from dataclasses import replace

import pytest
import torch

from tasks.adapters.contract import AttentionSummary, ModelSpec
from tasks.adapters.zoo import calibration as zoo
from tasks.data.synthetic import MASK_ID, make_synthetic
from tasks.diagnostics.ablation import ablation_visual_share
from tasks.diagnostics.mm_shap import mm_shap


@pytest.fixture(scope="module")
def models():
    return {v: zoo.ZooAdapter().load(ModelSpec(name=v, adapter="zoo", source=v)) for v in zoo.VARIANTS}


@pytest.fixture(scope="module")
def held_out():
    return make_synthetic(64, seed=7)  # not the training (1000) or check (1001) seeds


def _prepare(model, samples):
    return model.prepare([s.image for s in samples], [s.caption for s in samples], [s.sample_id for s in samples])


def _modality_shapley_share(model, inputs):
    """Exact two-player Shapley, image share |φ_I| / (|φ_I| + |φ_T|), per sample."""
    v = {(i, t): model.score(model.mask(inputs, i, t)) for i in (True, False) for t in (True, False)}
    phi_i = 0.5 * ((v[True, True] - v[False, True]) + (v[True, False] - v[False, False]))
    phi_t = 0.5 * ((v[True, True] - v[True, False]) + (v[False, True] - v[False, False]))
    return phi_i.abs() / (phi_i.abs() + phi_t.abs())


def test_unknown_variant_names_the_valid_ones():
    with pytest.raises(ValueError, match="text_dominant, balanced, vision_dominant"):
        zoo.ZooAdapter().load(ModelSpec(name="x", adapter="zoo", source="clip"))


def test_models_are_trained_weights_named_by_their_cache_key(models):
    assert zoo.ZooAdapter.capabilities == {"score", "mask", "trace", "mask_tokens", "rollout", "relevance", "maps"}
    for variant, model in models.items():
        assert model.random_init is False
        assert model.revision == zoo.cache_key(variant)


@pytest.mark.parametrize(
    "variant, low, high", [("text_dominant", 0.0, 0.05), ("balanced", 0.3, 0.7), ("vision_dominant", 0.95, 1.0)]
)
def test_modality_shapley_recovers_the_planted_behaviour(models, held_out, variant, low, high):
    share = _modality_shapley_share(models[variant], _prepare(models[variant], held_out))
    assert low <= share.mean().item() <= high


def test_held_out_accuracy_shows_the_planted_behaviour(models):
    text, balanced, vision = (models[v].held_out_accuracy for v in zoo.VARIANTS)
    assert text["full"] >= 0.9 and text["text_only"] >= text["full"] - 0.05
    assert vision["full"] >= 0.9 and vision["image_only"] >= vision["full"] - 0.05
    assert balanced["full"] >= max(balanced["image_only"], balanced["text_only"]) + 0.25
    for variant in zoo.VARIANTS:
        zoo.check_planted(variant, models[variant].held_out_accuracy)


def test_check_planted_rejects_a_stalled_model():
    stalled = {"full": 0.55, "image_only": 0.5, "text_only": 0.55, "majority": 0.5}
    for variant in zoo.VARIANTS:
        with pytest.raises(zoo.ZooTrainingError, match=variant):
            zoo.check_planted(variant, stalled)
    leaky = {"full": 1.0, "image_only": 0.9, "text_only": 1.0, "majority": 0.5}  # the image should be useless
    with pytest.raises(zoo.ZooTrainingError, match="image-only"):
        zoo.check_planted("text_dominant", leaky)


def test_second_load_reads_the_cache(models, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a cached zoo model was trained again")

    monkeypatch.setattr(zoo, "train", no_training)
    start = time.perf_counter()
    again = zoo.load_zoo_model("balanced")
    assert time.perf_counter() - start < 2.0
    assert again.from_cache and again.held_out_accuracy == models["balanced"].held_out_accuracy
    for name, tensor in models["balanced"].net.state_dict().items():
        assert torch.equal(tensor, again.net.state_dict()[name])


def test_training_runs_once_per_cache_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONAUDIT_HOME", str(tmp_path))
    calls = []

    def fake_train(variant, config):
        calls.append((variant, config))
        return zoo.FusionTransformer(config), {"full": 1.0, "image_only": 1.0, "text_only": 0.5, "majority": 0.5}

    monkeypatch.setattr(zoo, "train", fake_train)
    first = zoo.load_zoo_model("vision_dominant")
    second = zoo.load_zoo_model("vision_dominant")
    assert len(calls) == 1 and not first.from_cache and second.from_cache
    assert second.revision == first.revision
    zoo.load_zoo_model("vision_dominant", replace(zoo.DEFAULT_CONFIG, seed=1))  # another key → trains
    assert len(calls) == 2
    assert len(list((tmp_path / "cache" / "zoo").glob("*.pt"))) == 2


def test_mask_replaces_a_modality_with_its_baseline(models, held_out):
    model = models["balanced"]
    inputs = _prepare(model, held_out[:4])
    before = {k: v.clone() for k, v in inputs.tensors.items()}
    masked = model.mask(inputs, image_keep=False, text_keep=False)
    assert masked is not inputs and all(torch.equal(before[k], inputs.tensors[k]) for k in before)
    assert torch.all(masked.tensors["patches"] == 0)
    words = ~inputs.tensors["text_padding"]
    assert torch.all(masked.tensors["token_ids"][words] == MASK_ID)
    assert torch.equal(masked.tensors["token_ids"][~words], inputs.tensors["token_ids"][~words])  # padding stays
    kept = model.mask(inputs, image_keep=True, text_keep=True)
    assert all(torch.equal(kept.tensors[k], inputs.tensors[k]) for k in before)
    assert masked.sample_ids == inputs.sample_ids


def test_score_is_one_logit_per_pair(models, held_out):
    scores = models["balanced"].score(_prepare(models["balanced"], held_out[:5]))
    assert scores.shape == (5,) and not scores.requires_grad


def test_trace_summarises_every_layer(models, held_out):
    model = models["balanced"]
    inputs = _prepare(model, held_out[:6])
    row_sums = []
    probe = [
        layer.attn.attn_probs.register_forward_hook(lambda m, a, probs: row_sums.append(probs.sum(-1)))
        for layer in model.net.layers
    ]
    try:
        summary = model.trace(inputs)
    finally:
        for h in probe:
            h.remove()
    assert isinstance(summary, AttentionSummary)
    assert summary.layer_names == ["layer0", "layer1"]
    for name in ("visual_share", "text_share", "entropy_visual", "entropy_text"):
        values = getattr(summary, name)
        assert values.shape == (6, 2)
        assert torch.all((values >= 0) & (values <= 1 + 1e-6)), name
    assert torch.all(summary.visual_share + summary.text_share <= 1 + 1e-5)  # the rest sits on [CLS]
    assert all(torch.allclose(s, torch.ones_like(s), atol=1e-5) for s in row_sums) and len(row_sums) == 2
    assert summary.n_image_tokens == 16 and summary.n_text_tokens == 6
    assert summary.spans.image == (1, 17) and summary.spans.text == (17, 25) and summary.spans.special == (0,)
    assert all(not layer.attn.attn_probs._forward_hooks for layer in model.net.layers)  # hooks removed


# --- capabilities for the contribution metrics -------------------------------

def test_players_are_the_caption_words(models, held_out):
    model = models["balanced"]
    inputs = _prepare(model, held_out[:4])
    valid = model.players(inputs).text_valid
    assert torch.equal(valid, ~inputs.tensors["text_padding"])
    assert valid.sum(1).tolist() == [len(s.caption.split()) for s in held_out[:4]]


def test_mask_tokens_masks_grid_cells_and_words(models, held_out):
    model = models["balanced"]
    inputs = _prepare(model, held_out[:2])
    t = inputs.tensors
    image_keep = torch.ones(2, 2, 2, dtype=torch.bool)
    image_keep[0, 0, 0] = False  # sample 0: the top-left quarter = patches 0, 1, 4, 5 of the 4×4 patch grid
    text_keep = torch.ones_like(t["token_ids"], dtype=torch.bool)
    text_keep[1, 2] = False      # sample 1: its third word
    text_keep[:, -1] = False     # a padding position: not a player, must stay padding
    masked = model.mask_tokens(inputs, image_keep, text_keep)
    patches = masked.tensors["patches"]
    cell = [0, 1, 4, 5]
    assert torch.all(patches[0, cell] == 0)
    others = [i for i in range(16) if i not in cell]
    assert torch.equal(patches[0, others], t["patches"][0, others]) and torch.equal(patches[1], t["patches"][1])
    ids = masked.tensors["token_ids"]
    assert ids[1, 2] == MASK_ID and torch.equal(ids[0], t["token_ids"][0])
    assert torch.equal(ids[:, -1], t["token_ids"][:, -1])  # padding untouched
    assert (model.score(masked) != model.score(inputs)).all()  # masking a cell or a word changes the score
    # nothing kept is exactly the whole-modality baseline of mask(); everything kept changes nothing
    none = model.mask_tokens(inputs, torch.zeros(2, 3, 3, dtype=torch.bool), torch.zeros_like(text_keep))
    assert torch.allclose(model.score(none), model.score(model.mask(inputs, False, False)))
    every = model.mask_tokens(inputs, torch.ones(2, 3, 3, dtype=torch.bool), torch.ones_like(text_keep))
    assert torch.equal(every.tensors["patches"], t["patches"]) and torch.equal(every.tensors["token_ids"], t["token_ids"])
    with pytest.raises(ValueError, match="text_keep"):
        model.mask_tokens(inputs, image_keep, text_keep[:, :3])


def _captured_probs(model, inputs, grad: bool = False):
    probs = []

    def probe(_m, _a, p):
        if grad:
            p.retain_grad()
        probs.append(p)

    handles = [layer.attn.attn_probs.register_forward_hook(probe) for layer in model.net.layers]
    try:
        with torch.enable_grad() if grad else torch.no_grad():
            t = inputs.tensors
            logit = model.net(t["patches"], t["token_ids"], t["text_padding"])
            if grad:
                (logit * logit.detach().sign()).sum().backward()
                model.net.zero_grad(set_to_none=True)
    finally:
        for h in handles:
            h.remove()
    return probs


def _cls_share(row, inputs, n_patches):
    image = row[:, 1:1 + n_patches].sum(-1)
    text = (row[:, 1 + n_patches:] * (~inputs.tensors["text_padding"])).sum(-1)
    return image / (image + text)


def test_trace_carries_rollout_maps_and_caption_lengths(models, held_out):
    model = models["vision_dominant"]
    inputs = _prepare(model, held_out[:3])
    summary = model.trace(inputs, keep_maps=2)
    probs = _captured_probs(model, inputs)
    eye = torch.eye(probs[0].shape[-1])
    a_hat = [(0.5 * p.mean(1) + 0.5 * eye) for p in probs]  # rows already sum to 1
    expected = [_cls_share(a_hat[0][:, 0], inputs, 16), _cls_share((a_hat[1] @ a_hat[0])[:, 0], inputs, 16)]
    assert torch.allclose(summary.extras["rollout_visual_share"], torch.stack(expected, 1), atol=1e-5)
    assert summary.n_text_per_sample.tolist() == [len(s.caption.split()) for s in held_out[:3]]
    assert set(summary.maps) == {"layer0", "layer1"}
    assert summary.maps["layer0"].shape == (2, 25, 25)
    assert torch.allclose(summary.maps["layer1"], probs[1][:2].mean(1))
    assert model.trace(inputs).maps == {}


def test_relevance_is_chefers_rule_on_the_real_gradients(models, held_out):
    model = models["balanced"]
    inputs = _prepare(model, held_out[:4])
    shares = model.relevance(inputs)
    probs = _captured_probs(model, inputs, grad=True)
    r = torch.eye(probs[0].shape[-1]).expand(4, -1, -1)
    for p in probs:  # forward order: R ← R + Ā·R, Ā = E_h[(∇A ⊙ A)⁺]
        r = r + (p.grad * p).clamp(min=0).mean(1) @ r
    assert torch.allclose(shares, _cls_share(r[:, 0].detach(), inputs, 16), atol=1e-5)
    assert all(p.grad is None for p in model.net.parameters())  # no gradients left on the model


def test_new_metrics_recover_the_planted_behaviour(models, held_out):
    samples = held_out[:16]
    values = {}
    for variant, model in models.items():
        inputs = _prepare(model, samples)
        v = {(i, t): model.score(model.mask(inputs, i, t)) for i in (True, False) for t in (True, False)}
        result = mm_shap(model, [s.image for s in samples], [s.caption for s in samples],
                         [s.sample_id for s in samples], permutations=8)
        values[variant] = {
            "ablation": ablation_visual_share(v[True, True], v[True, False], v[False, True]).mean().item(),
            "mm_shap": result.v.mean().item(),
            "rollout": model.trace(inputs).extras["rollout_visual_share"][:, -1].mean().item(),
            "relevance": model.relevance(inputs).mean().item(),
        }
    text, balanced, vision = (values[v] for v in zoo.VARIANTS)
    assert text["ablation"] < 0.05 and vision["ablation"] > 0.95 and 0.3 < balanced["ablation"] < 0.7
    assert text["mm_shap"] < 0.05 and vision["mm_shap"] > 0.95 and 0.15 < balanced["mm_shap"] < 0.7
    # the attention-based metrics order the models correctly but span a narrower range
    for metric in ("rollout", "relevance"):
        assert text[metric] < balanced[metric] < vision[metric], metric


# --- training seeds ------------------------------------------------------------

def test_seed_zero_is_the_default_config_so_existing_models_and_caches_stay_valid():
    assert zoo.seeded_config(0) == zoo.DEFAULT_CONFIG
    for variant in zoo.VARIANTS:
        assert zoo.cache_key(variant, zoo.seeded_config(0)) == zoo.cache_key(variant)
    keys = {zoo.cache_key("balanced", zoo.seeded_config(s)) for s in zoo.SEEDS}
    assert len(keys) == len(zoo.SEEDS)  # each seed is its own cached model


def test_training_is_deterministic_per_seed_and_differs_between_seeds():
    tiny = replace(zoo.DEFAULT_CONFIG, steps=4, n_train=64, n_heldout=32, batch_size=16)

    def weights(seed):
        net, _ = zoo._fit("balanced", zoo.seeded_config(seed, tiny))
        return torch.cat([p.detach().flatten() for p in net.state_dict().values()])

    first = weights(1)
    assert torch.equal(first, weights(1))
    assert not torch.equal(first, weights(2))


@pytest.mark.parametrize("seed", [-1, 1.5, True, "1"])
def test_a_bad_seed_is_refused_with_the_fix(seed):
    with pytest.raises(ValueError, match="non-negative int"):
        zoo.seeded_config(seed)


def test_the_adapter_takes_only_a_seed_as_zoo_option():
    spec = ModelSpec(name="z", adapter="zoo", source="balanced", random_init_config=(("steps", 10),))
    with pytest.raises(ValueError, match=r"\['steps'\] are not zoo options.*\('seed', n\)"):
        zoo.ZooAdapter().load(spec)
