"""The shared transformers plumbing (hub, loading, preprocessing, hooks, image_text), offline,
on tiny random configs of real transformers classes.

Checkpoints are written with save_pretrained into temp folders and into a
hand-made hub cache laid out like huggingface_hub's; nothing is downloaded.
"""
from __future__ import annotations

import json
import math
import time

import pytest
import torch
from transformers import Blip2Config, CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

from tasks.adapters.contract import ModelSpec, WeightsUnavailable
from tasks.adapters.hf_clip import SMOKE
from tasks.adapters.hooks import AttentionHooks, LayerMasks
from tasks.adapters.hub import local_checkpoint, locate_pretrained, resolve_pretrained
from tasks.adapters.image_text import zero_grid_cells
from tasks.adapters.loading import open_pretrained, random_config
from tasks.adapters.preprocessing import BERT_SPECIALS, fallback_tokenizer, neutral_token_id

pytestmark = pytest.mark.usefixtures("offline_hub")  # every test sees only what it lays out itself

TINY_CLIP = SMOKE.random_init_config


def _spec(source: str = "", random: bool = False, overrides=TINY_CLIP, revision=None) -> ModelSpec:
    return ModelSpec(name="tiny-clip", adapter="clip", source=source, allow_random_init=random,
                     random_init_config=overrides, revision=revision)


@pytest.fixture(scope="module")
def tiny_clip() -> CLIPModel:
    model, random_init, _ = open_pretrained(CLIPModel, _spec(random=True), CLIPConfig)
    assert random_init
    return model


def _pixels(seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_random_init_builds_the_real_class_with_overrides(tiny_clip):
    assert isinstance(tiny_clip, CLIPModel) and not tiny_clip.training
    cfg = tiny_clip.config
    assert cfg.text_config.num_hidden_layers == 2 and cfg.vision_config.patch_size == 8
    assert cfg.text_config.eos_token_id == 63
    assert cfg._attn_implementation == "eager" and cfg.vision_config._attn_implementation == "eager"
    assert len(tiny_clip.vision_model.encoder.layers) == 2


def test_random_init_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, _, rev_a = open_pretrained(CLIPModel, _spec(random=True), CLIPConfig)
    assert torch.equal(torch.random.get_rng_state(), state)
    b, _, rev_b = open_pretrained(CLIPModel, _spec(random=True), CLIPConfig, seed=0)
    c, _, rev_c = open_pretrained(CLIPModel, _spec(random=True), CLIPConfig, seed=1)
    w = "text_model.embeddings.token_embedding.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])
    assert rev_a == rev_b != rev_c and rev_a.startswith("random-init@seed0:")
    other = open_pretrained(CLIPModel, _spec(random=True, overrides=TINY_CLIP[:-1]), CLIPConfig)[2]
    assert other != rev_a  # the revision follows the config


def test_random_config_nested_overrides_and_derived_values():
    spec = _spec(overrides=(("vision_config.hidden_size", 48), ("qformer_config.num_hidden_layers", 1),
                            ("num_query_tokens", 4)))
    cfg = random_config(Blip2Config, spec)
    assert cfg.vision_config.hidden_size == 48 and cfg.qformer_config.num_hidden_layers == 1
    assert cfg.num_query_tokens == 4
    assert cfg.qformer_config.encoder_hidden_size == 48  # derived from the vision width, follows the override
    assert cfg._attn_implementation == "eager" and cfg.qformer_config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="num_hiden_layers"):
        random_config(Blip2Config, _spec(overrides=(("qformer_config.num_hiden_layers", 1),)))
    with pytest.raises(ValueError, match="nested config 'speech_config'"):
        random_config(Blip2Config, _spec(overrides=(("speech_config.x", 1),)))


def test_local_directory_round_trip(tiny_clip, tmp_path):
    folder = tmp_path / "my-clip"
    tiny_clip.save_pretrained(folder)
    assert resolve_pretrained(_spec(str(folder))) == folder
    assert locate_pretrained(_spec(str(folder))) == (True, [str(folder)])
    model, random_init, revision = open_pretrained(CLIPModel, _spec(str(folder)), CLIPConfig)
    assert not random_init and revision.startswith("my-clip@sha256:")
    assert model.config._attn_implementation == "eager"
    pixels = _pixels()
    with torch.no_grad():
        assert torch.allclose(model.get_image_features(pixel_values=pixels).pooler_output,
                              tiny_clip.get_image_features(pixel_values=pixels).pooler_output, atol=1e-6)
    # the revision identifies the weights: other weights, other revision
    open_pretrained(CLIPModel, _spec(random=True), CLIPConfig, seed=3)[0].save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_bytes((folder / "config.json").read_bytes())
    assert open_pretrained(CLIPModel, _spec(str(tmp_path / "other")), CLIPConfig)[2] != revision


def test_missing_local_path_names_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(WeightsUnavailable) as err:
        resolve_pretrained(_spec(str(missing)))
    assert err.value.searched == [str(missing)] and "does not exist" in err.value.reason
    assert locate_pretrained(_spec(str(missing))) == (False, [str(missing)])


def test_offline_missing_hub_id_fails_fast_with_folder_and_command(offline_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as err:
        open_pretrained(CLIPModel, _spec("openai/clip-vit-base-patch32"), CLIPConfig)
    assert time.monotonic() - start < 5
    where = offline_hub / "models--openai--clip-vit-base-patch32"
    assert err.value.searched == [str(where), str(tmp_path / "openai" / "clip-vit-base-patch32")]
    assert "HF_HUB_OFFLINE" in err.value.reason
    message = str(err.value)
    assert str(where) in message
    assert f"hf download openai/clip-vit-base-patch32 --cache-dir {offline_hub}" in message
    assert locate_pretrained(_spec("openai/clip-vit-base-patch32"))[0] is False


def _lay_out_snapshot(cache, repo: str, model=None, commit: str = "a" * 40, config: dict | None = None):
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    if model is not None:
        model.save_pretrained(snapshot)
    if config is not None:
        (snapshot / "config.json").write_text(json.dumps(config))
    return snapshot


def test_cached_hub_id_loads_offline(tiny_clip, offline_hub):
    snapshot = _lay_out_snapshot(offline_hub, "fusionaudit/tiny-clip", tiny_clip)
    spec = _spec("fusionaudit/tiny-clip")
    assert resolve_pretrained(spec) == snapshot
    assert local_checkpoint(spec) == snapshot
    assert locate_pretrained(spec)[0] is True
    model, random_init, revision = open_pretrained(CLIPModel, spec, CLIPConfig)
    assert not random_init and revision == "fusionaudit/tiny-clip@" + "a" * 12
    with pytest.raises(WeightsUnavailable, match="HF_HUB_OFFLINE"):  # a revision not in the cache
        resolve_pretrained(_spec("fusionaudit/tiny-clip", revision="b" * 40))


def test_config_without_weights(tiny_clip, offline_hub):
    snapshot = _lay_out_snapshot(offline_hub, "fusionaudit/config-only", config=tiny_clip.config.to_dict())
    with pytest.raises(WeightsUnavailable) as err:
        open_pretrained(CLIPModel, _spec("fusionaudit/config-only"), CLIPConfig)
    assert "no weights" in err.value.reason and err.value.searched == [str(snapshot)]
    assert "--allow-random-init" in err.value.mitigation
    # --allow-random-init: the cached config is the architecture, the overrides still apply
    model, random_init, _ = open_pretrained(
        CLIPModel, _spec("fusionaudit/config-only", random=True, overrides=(("text_config.num_hidden_layers", 1),)),
        CLIPConfig)
    assert random_init
    assert model.config.vision_config.patch_size == 8 and model.config.text_config.num_hidden_layers == 1


def test_wrong_architecture_is_named(tiny_clip, tmp_path):
    folder = tmp_path / "vision-only"
    CLIPVisionModel(tiny_clip.config.vision_config).save_pretrained(folder)
    with pytest.raises(ValueError, match="clip_vision_model"):
        open_pretrained(CLIPModel, _spec(str(folder)), CLIPConfig)


def test_remote_code_repo_is_refused(offline_hub):
    config = {"model_type": "internvl_chat", "auto_map": {"AutoModel": "modeling_internvl_chat.InternVLChatModel"}}
    _lay_out_snapshot(offline_hub, "OpenGVLab/InternVL2-1B", config=config)
    with pytest.raises(WeightsUnavailable) as err:
        resolve_pretrained(_spec("OpenGVLab/InternVL2-1B"))
    assert "trust_remote_code" in err.value.reason and "-hf" in err.value.mitigation


def test_fallback_tokenizer_pins_ids_and_wraps():
    tok = fallback_tokenizer(["A", "red", "circle", "red"], {"bos_token": "<s>", "eos_token": "</s>",
                                                             "pad_token": "</s>", "unk_token": "<unk>"},
                             ids={"<s>": 62, "</s>": 63})
    out = tok(["a RED circle", "a dog"], padding=True)
    assert out["input_ids"] == [[62, 1, 2, 3, 63], [62, 1, 0, 63, 63]]  # unk = 0, lowercased, padded with </s>
    assert out["attention_mask"] == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert tok.pad_token_id == 63 and tok.unk_token_id == 0
    bert = fallback_tokenizer(["cat"], {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                                        "unk_token": "[UNK]", "mask_token": "[MASK]"})
    ids = bert("cat")["input_ids"]
    assert ids == [bert.cls_token_id, bert.convert_tokens_to_ids("cat"), bert.sep_token_id]
    assert bert.mask_token_id is not None and len({bert.cls_token_id, bert.sep_token_id, bert.pad_token_id,
                                                   bert.unk_token_id, bert.mask_token_id}) == 5


# --- hooks -------------------------------------------------------------------


@pytest.fixture(scope="module")
def vision():
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, attn_implementation="eager")
    torch.manual_seed(0)
    return CLIPVisionModel(config).eval()


# Pretend positions 1..8 are "image" and 9..16 are "text" in the 17-token sequence; CLS and text rows are measured.
IMAGE, TEXT = torch.zeros(17, dtype=torch.bool), torch.zeros(17, dtype=torch.bool)
IMAGE[1:9], TEXT[9:] = True, True
QUERY = TEXT.clone()
QUERY[0] = True
MASKS = LayerMasks(QUERY, IMAGE, TEXT, IMAGE, TEXT)
SELF_ATTN = r"encoder\.layers\.\d+\.self_attn"


def test_hooks_reduce_inside_and_leave_no_maps(vision):
    pixels = _pixels()
    with torch.no_grad():
        reference = vision(pixel_values=pixels, output_attentions=True).attentions  # 2 x [B, H, 17, 17]
    seen = []
    probes = [layer.self_attn.register_forward_hook(lambda m, a, out: seen.append(out[1]))
              for layer in vision.encoder.layers]
    try:
        with AttentionHooks(vision, SELF_ATTN, lambda layer, probs: MASKS, n_image_tokens=8, n_text_tokens=8,
                            rename=lambda n: "L" + n.split(".")[-2]) as hooks, torch.no_grad():
            vision(pixel_values=pixels)
    finally:
        for p in probes:
            p.remove()
    assert len(seen) == 2 and all(s is not None for s in seen)  # probes registered first see the maps ...
    s = hooks.summary
    assert s.layer_names == ["L0", "L1"] and s.visual_share.shape == (2, 2)
    for i, probs in enumerate(reference):
        assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5)
        mean = probs.mean(1)  # heads averaged
        rows = QUERY.nonzero().squeeze(1)
        want_v = mean[:, rows][:, :, IMAGE].sum(-1).mean(-1)
        want_t = mean[:, rows][:, :, TEXT].sum(-1).mean(-1)
        assert torch.allclose(s.visual_share[:, i], want_v, atol=1e-5)
        assert torch.allclose(s.text_share[:, i], want_t, atol=1e-5)
        ent = (-(probs * probs.clamp_min(1e-12).log()).sum(-1) / math.log(17)).mean(1)
        assert torch.allclose(s.entropy_visual[:, i], ent[:, IMAGE].mean(-1), atol=1e-5)
        assert torch.allclose(s.entropy_text[:, i], ent[:, TEXT].mean(-1), atol=1e-5)
    assert ((s.visual_share >= 0) & (s.visual_share <= 1)).all()

    # ... and a probe registered after the adapter's hook gets None: the map is gone
    late: list = []
    before = [dict(layer.self_attn._forward_hooks) for layer in vision.encoder.layers]  # transformers' own recorders
    with AttentionHooks(vision, SELF_ATTN, lambda layer, probs: MASKS) as hooks, torch.no_grad():
        handles = [layer.self_attn.register_forward_hook(lambda m, a, out: late.append(out[1]))
                   for layer in vision.encoder.layers]
        try:
            vision(pixel_values=pixels)
        finally:
            for h in handles:
                h.remove()
    assert late == [None, None]
    assert [dict(layer.self_attn._forward_hooks) for layer in vision.encoder.layers] == before


def test_cross_layers_record_nan_shares_and_keep_entropies(vision):
    with AttentionHooks(vision, SELF_ATTN, lambda layer, probs: MASKS,
                        cross=r".*layers\.1\.self_attn") as hooks, torch.no_grad():
        vision(pixel_values=_pixels())
    s = hooks.summary
    assert hooks.cross_layers == ["encoder.layers.1.self_attn"]
    assert torch.isfinite(s.visual_share[:, 0]).all() and torch.isnan(s.visual_share[:, 1]).all()
    assert torch.isnan(s.text_share[:, 1]).all() and torch.isfinite(s.entropy_text[:, 1]).all()


def test_hooks_refuse_two_passes_and_missing_maps(vision):
    with pytest.raises(RuntimeError, match="ran twice"):
        with AttentionHooks(vision, SELF_ATTN, lambda layer, probs: MASKS), torch.no_grad():
            vision(pixel_values=_pixels())
            vision(pixel_values=_pixels())
    vision.set_attn_implementation("sdpa")
    try:
        with pytest.raises(RuntimeError, match="eager"):
            with AttentionHooks(vision, SELF_ATTN, lambda layer, probs: MASKS), torch.no_grad():
                vision(pixel_values=_pixels())
    finally:
        vision.set_attn_implementation("eager")
    with pytest.raises(ValueError, match="no attention module"):
        AttentionHooks(vision, r"nothing\.here", lambda layer, probs: MASKS)


def test_hooks_keep_maps_and_observed_statistics(vision):
    seen_layers = []

    def observe(layer, probs):
        seen_layers.append(layer)
        return {"row0_self": probs.mean(1)[:, 0, 0]} if layer.endswith("1.self_attn") else None

    with AttentionHooks(vision, SELF_ATTN, lambda layer, probs: MASKS, keep_maps=1, observe=observe,
                        n_text_per_sample=torch.tensor([8, 8])) as hooks, torch.no_grad():
        vision(pixel_values=_pixels())
    s = hooks.summary
    assert seen_layers == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    assert {k: v.shape for k, v in s.maps.items()} == {n: (1, 17, 17) for n in seen_layers}
    assert torch.allclose(s.maps[seen_layers[0]].sum(-1), torch.ones(1, 17), atol=1e-5)  # head-mean rows
    extra = s.extras["row0_self"]
    assert extra.shape == (2, 2) and torch.isnan(extra[:, 0]).all() and ((extra[:, 1] > 0) & (extra[:, 1] < 1)).all()
    assert s.n_text_per_sample.tolist() == [8, 8]


def test_zero_grid_cells_within_each_real_region():
    pixels = torch.ones(2, 3, 6, 4)
    keep = torch.tensor([[[True, False], [False, True]], [[False, True], [True, True]]])
    out = zero_grid_cells(pixels, keep, region=torch.tensor([[4, 4], [6, 4]]))
    # sample 0: a 4×4 image in a 6×4 canvas → 2×2 cells; rows 4-5 are padding and stay as they were
    assert out[0, 0].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert out[1, 0].tolist() == [[0, 0, 1, 1]] * 3 + [[1, 1, 1, 1]] * 3
    assert torch.equal(zero_grid_cells(pixels[:1, :, :4], keep[:1]), out[:1, :, :4])  # no region: whole image
    with pytest.raises(ValueError, match="image_keep"):
        zero_grid_cells(pixels, keep[:, :1])


def test_neutral_token_without_a_mask_token_is_never_special():
    tok = fallback_tokenizer(["red"], {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>",
                                       "unk_token": "<unk>"})
    special = set(tok.all_special_ids)
    assert tok.mask_token_id is None and neutral_token_id(tok) not in special
    bert = fallback_tokenizer(["red"], BERT_SPECIALS)
    assert neutral_token_id(bert) == bert.mask_token_id
