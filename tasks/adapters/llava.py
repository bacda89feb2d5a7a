"""LLaVA-1.5 and LLaVA-NeXT (adapters "llava", "llava-next"), on the generative body of generative.py.

LLaVA-1.5 scatters CLIP patch features (576 at 336 px) into the LM sequence at
its ``<image>`` tokens; LLaVA-NeXT adds anyres tiles (base image + grid crops,
newline tokens between rows), so its number of image tokens varies.

Image masking: the whole image → pixels zero in normalised space (the
dataset-mean image). Grid cells (MM-SHAP): LLaVA-1.5 zeroes the cell's
pixels of ``pixel_values`` exactly; LLaVA-NeXT's tiles are resized crops of
a padded canvas, so there a cell of the *original* image is painted with
the processor's mean colour (nearest 8-bit value) and the image processed
again: ≈ 0 after normalisation, up to resampling blur at the cell border.

Random-init runs (``--allow-random-init`` without weights) build the
processor from its classes: the image processor at the config's vision
size and a word-level tokenizer holding the prompt words, the
synthetic-data vocabulary and the special tokens; the config's token ids
are pointed at that tokenizer.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessor,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaProcessor,
)

from tasks.adapters.contract import Inputs, Smoke
from tasks.adapters.generative import GenerativeVLM, HFGenerativeAdapter, random_tokenizer, repainted_pixels
from tasks.adapters.preprocessing import clip_crop

LLAVA_FORMAT = "USER: <image>\n{question} ASSISTANT:"
LLAVA_NEXT_FORMAT = "[INST] <image>\n{question} [/INST]"  # llava-v1.6-mistral; vicuna checkpoints ship their template


class LlavaModel(GenerativeVLM):
    """LLaVA-1.5: CLIP patch features projected into the LM sequence at the <image> tokens."""


class LlavaNextModel(GenerativeVLM):
    """LLaVA-NeXT: anyres tiles (base image + grid crops, newline tokens between rows) at the <image> tokens."""

    def _mask_cells(self, inputs: Inputs, image_keep: torch.Tensor) -> dict[str, torch.Tensor]:
        return repainted_pixels(self, inputs, image_keep)


# The tiny LLaVA both smoke models build: a 2-layer CLIP tower (4×4 patches = 16 image tokens), a 2-layer LM.
SMOKE_CONFIG = (
    ("vision_config.hidden_size", 32), ("vision_config.intermediate_size", 64),
    ("vision_config.num_hidden_layers", 2), ("vision_config.num_attention_heads", 4),
    ("vision_config.image_size", 32), ("vision_config.patch_size", 8),
    ("text_config.hidden_size", 64), ("text_config.intermediate_size", 128), ("text_config.num_hidden_layers", 2),
    ("text_config.num_attention_heads", 4), ("text_config.num_key_value_heads", 2), ("text_config.vocab_size", 128),
)


class LlavaAdapter(HFGenerativeAdapter):
    """``llava``: LlavaForConditionalGeneration (llava-hf/llava-1.5-7b-hf and kin)."""

    name = "llava"
    smoke = Smoke(hub_id="llava-hf/llava-1.5-7b-hf", random_init_config=SMOKE_CONFIG)
    model_cls, config_cls, loaded_cls = LlavaForConditionalGeneration, LlavaConfig, LlavaModel
    processor_cls = LlavaProcessor
    prompt_format = LLAVA_FORMAT

    def random_image_processor(self, model, size: int):
        return LlavaImageProcessor(**clip_crop(size))

    def random_processor(self, model):
        config = model.config
        image_processor = self.random_image_processor(model, config.vision_config.image_size)
        tok = random_tokenizer(model, self.prompt_format, {"image_token": "<image>"}, bos="<s>")
        config.image_token_id = tok.image_token_id  # the random model reads features into the tokenizer's <image>
        return self.processor_cls(image_processor=image_processor, tokenizer=tok,
                                  patch_size=config.vision_config.patch_size,
                                  vision_feature_select_strategy=config.vision_feature_select_strategy,
                                  num_additional_image_tokens=1)  # CLIP's CLS


def scaled_pinpoints(pinpoints: list, tile: int) -> list[list[int]]:
    """Anyres resolutions as multiples of the tile size; LLaVA-NeXT's defaults assume 336-px tiles."""
    if all(h % tile == 0 and w % tile == 0 for h, w in pinpoints):
        return [list(p) for p in pinpoints]
    return [[max(1, round(h / 336)) * tile, max(1, round(w / 336)) * tile] for h, w in pinpoints]


class LlavaNextAdapter(LlavaAdapter):
    """``llava-next``: LlavaNextForConditionalGeneration (llava-hf/llava-v1.6-*)."""

    name = "llava-next"
    smoke = replace(LlavaAdapter.smoke, hub_id="llava-hf/llava-v1.6-mistral-7b-hf")  # the same tiny LLaVA
    model_cls, config_cls, loaded_cls = LlavaNextForConditionalGeneration, LlavaNextConfig, LlavaNextModel
    processor_cls = LlavaNextProcessor
    prompt_format = LLAVA_NEXT_FORMAT

    def random_image_processor(self, model, size: int):
        # processor and model must agree on the anyres grid; the forward pass reads it from the config
        grid = model.config.image_grid_pinpoints = scaled_pinpoints(model.config.image_grid_pinpoints, size)
        return LlavaNextImageProcessor(**clip_crop(size), image_grid_pinpoints=grid)
