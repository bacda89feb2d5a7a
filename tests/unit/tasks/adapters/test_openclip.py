"""The open_clip adapter on a tiny config of the real CLIP class, offline.

No pretrained weights are downloaded: random init, a state_dict saved to a
temp file, and a hand-made hub cache exercise open_clip's real loading paths.
"""
from __future__ import annotations

import hashlib
import math
import time

import open_clip
import pytest
import torch
from torch import nn

from tasks.adapters.contract import ModelSpec, WeightsUnavailable
from tasks.adapters.openclip import SMOKE_ARCH, OpenClipAdapter, OpenClipModel, register_smoke_arch

TINY = SMOKE_ARCH


@pytest.fixture(scope="module")
def tiny_arch() -> str:
    return register_smoke_arch()


def _spec(arch: str, source: str = "", random: bool = False) -> ModelSpec:
    return ModelSpec(name="tiny-clip", adapter="openclip", source=source, arch=arch, allow_random_init=random)


@pytest.fixture(scope="module")
def model(tiny_arch) -> OpenClipModel:
    torch.manual_seed(0)
    return OpenClipAdapter(device="cpu").load(_spec(tiny_arch, random=True))


@pytest.fixture
def captions() -> list[str]:
    return ["a red square", "two small blue circles on green grass"]


def test_random_init_builds_the_real_class(model):
    assert isinstance(model.model, open_clip.CLIP)
    assert model.random_init and model.revision == "random-init"
    assert model.family == "dual encoder"
    assert OpenClipAdapter.capabilities == {"score", "mask", "trace", "mask_tokens", "separable", "maps"}
    assert len(model.visual_attn) == len(model.text_attn) == 2
    assert model.special_ids == {49406, 49407}  # not CLIP's unused eos_id=2, an ordinary BPE token


def test_prepare_uses_preprocess_and_tokenizer(model, inputs):
    assert inputs.tensors["image"].shape == (2, 3, 32, 32)
    text = inputs.tensors["text"]
    assert text.shape == (2, 16)
    assert (text[:, 0] == 49406).all()
    assert text[0, model.eot_index(text)[0]] == 49407


def test_score_is_the_models_own_pair_logit(model, inputs):
    scores = model.score(inputs)
    assert scores.shape == (2,)
    with torch.no_grad():
        image_feat, text_feat, scale = model.model(inputs.tensors["image"], inputs.tensors["text"])
    assert torch.allclose(scores, torch.diag(scale * image_feat @ text_feat.T), atol=1e-5)


def test_mask_baselines(model, inputs):
    text = inputs.tensors["text"]
    eot = model.eot_index(text)
    no_image = model.mask(inputs, image_keep=False, text_keep=True)
    no_text = model.mask(inputs, image_keep=True, text_keep=False)

    assert (no_image.tensors["image"] == 0).all()
    masked = no_text.tensors["text"]
    assert (masked[:, 0] == 49406).all()
    assert torch.equal(model.eot_index(masked), eot)  # the pooled token did not move
    for i in range(len(inputs)):
        assert (masked[i, 1:eot[i]] == 0).all()
        assert torch.equal(masked[i, eot[i]:], text[i, eot[i]:])
    assert text[0, 1] != 0  # the original inputs are untouched

    base = model.score(inputs)
    assert not torch.allclose(model.score(no_image), base)
    assert not torch.allclose(model.score(no_text), base)


def test_trace_reduces_attention_inside_hooks(model, inputs):
    captured: dict[int, torch.Tensor] = {}

    def probe(module, _args, output):  # registered first, so it runs before the adapter's hook drops the map
        captured[id(module)] = output[1]

    attns = model.visual_attn + model.text_attn
    handles = [a.register_forward_hook(probe) for a in attns]
    try:
        summary = model.trace(inputs)
    finally:
        for h in handles:
            h.remove()

    b, n_layers = 2, 4
    assert summary.layer_names == ["visual.0", "visual.1", "text.0", "text.1"]
    for field in ("visual_share", "text_share", "entropy_visual", "entropy_text"):
        assert getattr(summary, field).shape == (b, n_layers)
    assert torch.isnan(summary.visual_share).all() and torch.isnan(summary.text_share).all()
    ent_v, ent_t = summary.entropy_visual, summary.entropy_text
    assert torch.isfinite(ent_v[:, :2]).all() and torch.isnan(ent_v[:, 2:]).all()
    assert torch.isfinite(ent_t[:, 2:]).all() and torch.isnan(ent_t[:, :2]).all()
    assert ((ent_v[:, :2] >= 0) & (ent_v[:, :2] <= 1)).all()
    assert ((ent_t[:, 2:] >= 0) & (ent_t[:, 2:] <= 1)).all()
    assert summary.n_image_tokens == 5 and summary.n_text_tokens == 16

    for attn in attns:  # real per-head probability rows
        probs = captured[id(attn)]
        assert probs.dim() == 4 and probs.shape[:2] == (b, attn.num_heads)
        assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5)

    # text entropy averages only rows up to EOT (padding rows excluded): recompute text.0 by hand
    probs = captured[id(model.text_attn[0])]
    eot = model.eot_index(inputs.tensors["text"])
    ent = (-(probs * probs.clamp_min(1e-12).log()).sum(-1) / math.log(probs.shape[-1])).mean(1)  # heads averaged
    expected = torch.stack([ent[i, : eot[i] + 1].mean() for i in range(b)])
    assert torch.allclose(ent_t[:, 2], expected, atol=1e-5)


def test_trace_leaves_no_hooks_behind(model, inputs):
    before = model.score(inputs)
    model.trace(inputs)
    seen = []
    handle = model.visual_attn[0].register_forward_hook(lambda m, a, out: seen.append(out[1]))
    try:
        after = model.score(inputs)
    finally:
        handle.remove()
    assert seen == [None]  # open_clip's own need_weights=False again
    assert torch.equal(before, after)


def test_local_checkpoint_goes_through_open_clip(model, inputs, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(model.model.state_dict(), path)
    loaded = OpenClipAdapter(device="cpu").load(_spec(model.spec.arch, source=str(path)))
    assert not loaded.random_init
    assert loaded.revision == f"tiny.pt@sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
    assert torch.allclose(loaded.score(inputs), model.score(inputs), atol=1e-6)


def test_missing_local_checkpoint_names_the_path(tiny_arch, tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(WeightsUnavailable) as err:
        OpenClipAdapter(device="cpu").load(_spec(tiny_arch, source=str(path)))
    assert err.value.searched == [str(path)]
    assert str(path) in str(err.value)


def test_unknown_arch_and_tag(tiny_arch):
    with pytest.raises(ValueError, match="list_models"):
        OpenClipAdapter().load(_spec("ViT-B-33", source="openai"))
    with pytest.raises(ValueError, match="laion2b_s34b_b79k"):
        OpenClipAdapter().load(_spec("ViT-B-32", source="no_such_tag"))


def test_offline_tag_fails_fast_with_place_and_command(offline_hub, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("open_clip must not be asked to download while offline")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", no_build)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as err:
        OpenClipAdapter(device="cpu").load(_spec("ViT-B-32", source="laion2b_s34b_b79k"))
    assert time.monotonic() - start < 5
    where = str(offline_hub / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K")
    assert err.value.searched == [where]
    message = str(err.value)
    assert where in message and "HF_HUB_OFFLINE" in message
    assert "open_clip.create_model_and_transforms('ViT-B-32', pretrained='laion2b_s34b_b79k')" in message
    assert "hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K open_clip_pytorch_model.bin" in message


def test_cached_tag_loads_offline_through_the_hub_cache(model, inputs, offline_hub, monkeypatch):
    # Fake a pretrained tag for the tiny arch and lay out its weights like huggingface_hub does.
    repo, commit = "fusionaudit/tiny-clip", "0" * 40
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY,
                        {"fa_test": open_clip.pretrained._pcfg(hf_hub=f"{repo}/")})
    repo_dir = offline_hub / "models--fusionaudit--tiny-clip"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    weights = snapshot / "open_clip_pytorch_model.bin"
    torch.save(model.model.state_dict(), weights)

    loaded = OpenClipAdapter(device="cpu").load(_spec(TINY, source="fa_test"))
    assert loaded.revision == f"fa_test@sha256:{hashlib.sha256(weights.read_bytes()).hexdigest()[:12]}"
    assert torch.allclose(loaded.score(inputs), model.score(inputs), atol=1e-6)


# --- MM-SHAP capabilities: players, mask_tokens, separable towers -------------

def test_players_are_the_caption_tokens_between_sot_and_eot(model, inputs):
    text = inputs.tensors["text"]
    valid = model.players(inputs).text_valid
    eot = model.eot_index(text)
    for i in range(len(inputs)):
        assert valid[i].nonzero().flatten().tolist() == list(range(1, int(eot[i])))
    assert valid.sum(1).tolist() == [3, 7]  # "a red square", "two small blue circles on green grass"


def test_mask_tokens_masks_cells_and_tokens(model, inputs):
    text, image = inputs.tensors["text"], inputs.tensors["image"]
    image_keep = torch.ones(2, 2, 2, dtype=torch.bool)
    image_keep[1, 1, 0] = False   # sample 1: bottom-left 16×16 quarter of the 32-px input
    text_keep = torch.ones_like(text, dtype=torch.bool)
    text_keep[0, 2] = False       # sample 0: the token "red"
    text_keep[:, 0] = False       # SOT is no player: it must survive
    masked = model.mask_tokens(inputs, image_keep, text_keep)
    m_image, m_text = masked.tensors["image"], masked.tensors["text"]
    assert (m_image[1, :, 16:, :16] == 0).all() and torch.equal(m_image[1, :, :16], image[1, :, :16])
    assert torch.equal(m_image[0], image[0])
    assert m_text[0, 2] == model.pad_id and torch.equal(m_text[:, 0], text[:, 0])
    assert torch.equal(m_text[1], text[1]) and torch.equal(model.eot_index(m_text), model.eot_index(text))
    scores, base = model.score(masked), model.score(inputs)
    assert (scores != base).all()  # masking one token / one cell changes the score
    only_text = model.mask_tokens(inputs, torch.ones(2, 1, 1, dtype=torch.bool), text_keep)
    assert not torch.isclose(model.score(only_text)[0], base[0]) and torch.isclose(model.score(only_text)[1], base[1])
    # nothing kept is the whole-modality baseline of mask()
    none = model.mask_tokens(inputs, torch.zeros(2, 3, 3, dtype=torch.bool), torch.zeros_like(text_keep))
    assert torch.allclose(model.score(none), model.score(model.mask(inputs, False, False)), atol=1e-5)
    with pytest.raises(ValueError, match="image_keep"):
        model.mask_tokens(inputs, torch.ones(2, 2, dtype=torch.bool), text_keep)


def test_separable_similarity_equals_score(model, inputs):
    assert torch.allclose(model.similarity(model.encode_image(inputs), model.encode_text(inputs)), model.score(inputs),
                          atol=1e-6)
    image_keep = torch.tensor([[[True, False], [True, True]], [[False, False], [True, False]]])
    text_keep = torch.ones_like(inputs.tensors["text"], dtype=torch.bool)
    text_keep[:, 1] = False
    towers = model.similarity(model.encode_image(inputs, image_keep), model.encode_text(inputs, text_keep))
    assert torch.allclose(towers, model.score(model.mask_tokens(inputs, image_keep, text_keep)), atol=1e-5)
    assert model.encode_image(inputs).shape == (2, 32) and model.encode_text(inputs).shape == (2, 32)


def test_trace_keeps_maps_of_the_first_samples_only_on_request(model, inputs):
    summary = model.trace(inputs, keep_maps=1)
    assert set(summary.maps) == {"visual.0", "visual.1", "text.0", "text.1"}
    assert summary.maps["visual.0"].shape == (1, 5, 5) and summary.maps["text.1"].shape == (1, 16, 16)
    assert torch.allclose(summary.maps["visual.1"].sum(-1), torch.ones(1, 5), atol=1e-5)
    assert model.trace(inputs).maps == {}


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask", ["none", "causal_float", "causal_bool", "padding"])
def test_lean_self_attention_equals_pytorchs_weights_path(batch_first, mask):
    """The traced forward's own attention returns PyTorch's output and per-head maps (to float precision)."""
    from tasks.adapters.openclip import _leanable, _self_attention_with_probs

    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    x = torch.randn(3, 7, 16) if batch_first else torch.randn(7, 3, 16)
    kwargs = {}
    if mask == "causal_float":
        kwargs["attn_mask"] = torch.full((7, 7), float("-inf")).triu(1)
    elif mask == "causal_bool":
        kwargs["attn_mask"] = torch.ones(7, 7, dtype=torch.bool).triu(1)
    elif mask == "padding":
        kwargs["key_padding_mask"] = torch.arange(7)[None, :] >= torch.tensor([7, 5, 3])[:, None]
    with torch.no_grad():
        want_out, want_probs = attn(x, x, x, need_weights=True, average_attn_weights=False, **kwargs)
        out, probs = _self_attention_with_probs(attn, x, x, x, **kwargs)
    assert _leanable(attn)
    assert torch.allclose(out, want_out, atol=1e-6) and torch.allclose(probs, want_probs, atol=1e-6)


def test_trace_score_equals_the_plain_score(model, inputs):
    """The traced forward's embeddings give the plain forward's pair logits (the diagnostics use either)."""
    assert torch.allclose(model.trace(inputs).score, model.score(inputs), atol=1e-5)


def test_trace_runs_repeated_rows_once_and_gives_every_sample_its_own_row(model, inputs):
    """A batch where an image and a caption recur: the same per-sample values as tracing each sample alone."""
    from tasks.adapters.contract import Inputs

    image, text = inputs.tensors["image"], inputs.tensors["text"]
    mixed = Inputs(tensors={"image": image[[0, 1, 0]], "text": text[[1, 1, 0]]}, sample_ids=["a", "b", "c"])
    seen = []
    handle = model.visual_attn[0].register_forward_hook(lambda m, a, out: seen.append(out[1].shape[0]))
    try:
        summary = model.trace(mixed, keep_maps=3)
    finally:
        handle.remove()
    assert seen == [2]  # two distinct images ran, not three
    for row, (i, t) in enumerate([(0, 1), (1, 1), (0, 0)]):
        alone = model.trace(Inputs(tensors={"image": image[[i]], "text": text[[t]]}, sample_ids=["x"]), keep_maps=1)
        for field in ("entropy_visual", "entropy_text"):
            assert torch.allclose(getattr(summary, field)[row], getattr(alone, field)[0], atol=1e-5, equal_nan=True)
        assert torch.allclose(summary.score[row], alone.score[0], atol=1e-5)
        assert torch.allclose(summary.maps["visual.0"][row], alone.maps["visual.0"][0], atol=1e-5)
