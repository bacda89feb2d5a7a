"""LLaVA-1.5 / LLaVA-NeXT adapters and the shared generative-VLM machinery, on tiny random configs, offline."""
from __future__ import annotations

import pytest
import torch
from transformers import (
    LlavaForConditionalGeneration,
    LlavaNextForConditionalGeneration,
)

from tasks.adapters.contract import ModelSpec
from tasks.adapters.generative import overlap_positions, shifted_span
from tasks.adapters.llava import SMOKE_CONFIG, LlavaAdapter, LlavaNextAdapter, scaled_pinpoints
from tasks.adapters.yes_no_prompt import YesNoPrompt, chat_prompt

TINY = SMOKE_CONFIG


def _spec(adapter: str, source: str = "", random: bool = True) -> ModelSpec:
    return ModelSpec(name=f"tiny-{adapter}", adapter=adapter, source=source, allow_random_init=random,
                     random_init_config=TINY)


@pytest.fixture(scope="module")
def llava():
    return LlavaAdapter(device="cpu").load(_spec("llava"))


@pytest.fixture(scope="module")
def llava_next():
    return LlavaNextAdapter(device="cpu").load(_spec("llava-next"))


@pytest.fixture(scope="module")
def samples(synthetic_samples):
    return synthetic_samples((64, 32))  # another aspect ratio: NeXT picks another tile grid


@pytest.fixture(params=["llava", "llava_next"])
def model(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def inputs(model, samples):
    return model.prepare(*samples)


def test_random_init_builds_the_real_class_with_overrides(llava, llava_next):
    for loaded, cls in ((llava, LlavaForConditionalGeneration), (llava_next, LlavaNextForConditionalGeneration)):
        assert type(loaded.model) is cls
        config = loaded.model.config
        assert config.text_config.num_hidden_layers == 2 and config.vision_config.hidden_size == 32
        assert config._attn_implementation == "eager"
        assert loaded.random_init and loaded.revision.startswith("random-init@seed0:")
        assert loaded.capabilities >= {"score", "mask", "mask_tokens", "trace"}
        assert loaded.family == "LLM with image tokens"


def test_image_tokens_sit_where_the_model_scatters_features(model, inputs):
    ids = inputs.tensors["input_ids"]
    image = inputs.meta["image"]
    assert torch.equal(image, ids == model.model.config.image_token_id)
    counts = image.sum(1)
    if isinstance(model.model, LlavaNextForConditionalGeneration):
        assert counts[0] == counts[2] != counts[1]  # anyres: the token count follows the aspect ratio
        with torch.no_grad():  # as many features as placeholders, per image
            feats = model.model.model.get_image_features(inputs.tensors["pixel_values"],
                                                         image_sizes=inputs.tensors["image_sizes"]).pooler_output
        assert [len(f) for f in feats] == counts.tolist()
    else:
        assert counts.tolist() == [16, 16, 16]  # (32 / 8)² patches, CLS dropped
    for i, span in enumerate(inputs.meta["spans"]):
        where = image[i].nonzero().flatten()
        assert span.image == (int(where[0]), int(where[-1]) + 1) and len(where) == span.image[1] - span.image[0]


def test_caption_tokens_are_the_caption_only(model, inputs, samples):
    ids, caption = inputs.tensors["input_ids"], inputs.meta["caption"]
    for i, text in enumerate(samples[1]):
        assert model.tokenizer.decode(ids[i][caption[i]]) == text.lower()
        start, stop = inputs.meta["spans"][i].text
        assert caption[i].sum() == stop - start == len(text.split())
    assert not (caption & inputs.meta["image"]).any() and not (caption & inputs.meta["special"]).any()
    assert (model.players(inputs).text_valid == caption).all()


def test_score_is_the_yes_no_logit_difference_of_the_full_forward(model, inputs):
    scores = model.score(inputs)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    with torch.no_grad():
        logits = model.model(**inputs.tensors).logits
    last = inputs.meta["last"]
    assert (inputs.tensors["attention_mask"].sum(1) - 1 == last).all()  # right padding
    expected = logits[torch.arange(3), last, model.yes_id] - logits[torch.arange(3), last, model.no_id]
    assert torch.allclose(scores, expected, atol=1e-5)
    assert model.tokenizer.convert_ids_to_tokens([model.yes_id, model.no_id]) == ["yes", "no"]


def test_score_does_not_depend_on_the_batch(model, samples):
    together = model.score(model.prepare(*samples))
    alone = torch.cat([model.score(model.prepare([im], [c], [s])) for im, c, s in zip(*samples)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_masking_replaces_one_modality_and_changes_the_score(model, inputs):
    full = model.score(inputs)
    assert torch.equal(model.score(model.mask(inputs, True, True)), full)
    no_text = model.mask(inputs, image_keep=True, text_keep=False)
    changed = no_text.tensors["input_ids"] != inputs.tensors["input_ids"]
    assert torch.equal(changed, inputs.meta["caption"])  # only caption tokens, each to the pad id
    assert (no_text.tensors["input_ids"][changed] == model.tokenizer.pad_token_id).all()
    no_image = model.mask(inputs, image_keep=False, text_keep=True)
    assert (no_image.tensors["pixel_values"] == 0).all()
    assert torch.equal(no_image.tensors["input_ids"], inputs.tensors["input_ids"])
    assert not torch.allclose(model.score(no_text), full, atol=1e-6)
    assert not torch.allclose(model.score(no_image), full, atol=1e-6)
    assert inputs.tensors["pixel_values"].abs().sum() > 0  # masking returned copies


def test_mask_tokens_masks_cells_and_caption_players(model, inputs):
    caption = inputs.meta["caption"]
    every_cell = torch.ones(3, 2, 2, dtype=torch.bool)
    kept = model.mask_tokens(inputs, every_cell, torch.ones_like(caption))
    assert torch.equal(model.score(kept), model.score(inputs))
    one_cell = every_cell.clone()
    one_cell[:, 0, 0] = False
    text_keep = torch.ones_like(caption)
    first_player = caption.long().argmax(1)
    text_keep[torch.arange(3), first_player] = False
    masked = model.mask_tokens(inputs, one_cell, text_keep)
    ids = masked.tensors["input_ids"]
    assert (ids[torch.arange(3), first_player] == model.tokenizer.pad_token_id).all()
    assert (ids != inputs.tensors["input_ids"]).sum() == 3
    pixels, original = masked.tensors["pixel_values"], inputs.tensors["pixel_values"]
    if isinstance(model.model, LlavaNextForConditionalGeneration):
        assert not torch.equal(pixels, original) and pixels.shape == original.shape
    else:  # the top-left 16×16 pixels of each 32×32 image, exactly
        assert (pixels[..., :16, :16] == 0).all()
        assert torch.equal(pixels[..., 16:, :], original[..., 16:, :])
        assert torch.equal(pixels[..., :16, 16:], original[..., :16, 16:])
    assert not torch.allclose(model.score(masked), model.score(inputs), atol=1e-6)
    with pytest.raises(ValueError, match="players"):
        model.mask_tokens(inputs, one_cell, text_keep[:, :-1])


def test_trace_matches_attention_computed_by_hand(model, inputs, lm_shares_follow_attention):
    summary = lm_shares_follow_attention(model, inputs)
    assert summary.visual_share.shape == summary.text_share.shape == summary.entropy_text.shape == (3, 2)
    assert (summary.visual_share > 0).all()
    meta = inputs.meta
    assert summary.n_image_tokens == int(meta["image"].sum(1).max())
    assert summary.n_text_per_sample.tolist() == meta["caption"].sum(1).tolist()
    assert summary.n_text_tokens == int(meta["caption"].sum(1).max())
    # the hooks dropped the maps: nothing of shape [B, H, Q, K] is left on the summary
    assert all(v.dim() == 2 for v in (summary.visual_share, summary.entropy_visual)) and not summary.maps


def test_trace_keeps_maps_only_on_request(llava, samples):
    inputs = llava.prepare(*samples)
    summary = llava.trace(inputs, keep_maps=1)
    s = inputs.tensors["input_ids"].shape[1]
    assert set(summary.maps) == {"lm.0", "lm.1"} and summary.maps["lm.0"].shape == (1, s, s)
    assert summary.spans == inputs.meta["spans"][0]  # same-size images, same caption length: one layout


def test_a_saved_checkpoint_opens_with_its_own_processor(llava, samples, tmp_path):
    llava.model.save_pretrained(tmp_path)
    llava.processor.save_pretrained(tmp_path)
    reopened = LlavaAdapter(device="cpu").load(_spec("llava", source=str(tmp_path), random=False))
    assert not reopened.random_init and reopened.revision.startswith(f"{tmp_path.name}@sha256:")
    assert torch.allclose(reopened.score(reopened.prepare(*samples)), llava.score(llava.prepare(*samples)),
                          atol=1e-5)


LLAVA_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
                  "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
                  "{% endif %}{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}")


def test_chat_template_frames_the_caption_and_the_answer(llava):
    processor = llava.processor
    before = processor.chat_template
    try:
        processor.chat_template = LLAVA_TEMPLATE
        prompt = chat_prompt(processor, "unused {question}")
        processor.chat_template = "{{ bos_token }}" + LLAVA_TEMPLATE
        with_bos = chat_prompt(processor, "unused {question}")
    finally:
        processor.chat_template = before
    assert with_bos == prompt  # the tokenizer adds BOS itself: the template's copy is dropped
    text, (start, stop) = prompt.render("a red  square\n on top")
    assert text == ("USER: <image>\nDoes this caption describe the image? Caption: a red square on top\n"
                    "Answer yes or no. ASSISTANT:")
    assert text[start:stop] == "a red square on top" and prompt.yes == " Yes"
    qwen_like = YesNoPrompt.from_format("<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
    assert qwen_like.yes == "Yes" and qwen_like.suffix.endswith("assistant\n")


def test_position_helpers():
    assert shifted_span((20, 25), [{"span": (6, 13), "new_span": (6, 118)}]) == (125, 130)
    assert shifted_span((2, 5), [{"span": (6, 13), "new_span": (6, 118)}]) == (2, 5)  # placeholder after it
    offsets = torch.tensor([[[0, 0], [0, 4], [4, 9], [9, 12], [12, 12]]])
    attention = torch.tensor([[1, 1, 1, 1, 0]])
    # a token straddling the caption start (" a" of byte-level BPE) belongs to the caption
    assert overlap_positions(offsets, attention, [(5, 12)]).tolist() == [[False, False, True, True, False]]
    assert scaled_pinpoints([[336, 672], [672, 672]], 32) == [[32, 64], [64, 64]]
    assert scaled_pinpoints([[32, 64]], 32) == [[32, 64]]
