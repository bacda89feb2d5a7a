"""InternVL (transformers-native ``InternVLForConditionalGeneration``, e.g. OpenGVLab/InternVL3-1B-hf).

The image is cut into up to ``max_patches`` tiles of the vision size (plus
a thumbnail when there is more than one), each tile's ViT features are
pixel-shuffled to ``image_seq_length`` tokens and placed at the
``<IMG_CONTEXT>`` tokens between ``<img>`` and ``</img>``; the number of
image tokens thus varies with the aspect ratio. ``<img>``/``</img>`` count
as special tokens, not image tokens: they carry no image features.

Grid-cell masking paints the cell in the original image and tiles it again
(``repainted_pixels``, see generative.py). Random-init runs allow at most
``RANDOM_INIT_MAX_TILES`` tiles so a CPU run stays small.
"""
from __future__ import annotations

import torch
from transformers import (
    GotOcr2ImageProcessor,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVideoProcessor,
)

from tasks.adapters.contract import Inputs, Smoke
from tasks.adapters.generative import GenerativeVLM, HFGenerativeAdapter, random_tokenizer, repainted_pixels

INTERNVL_FORMAT = "<|im_start|>user\n<IMG_CONTEXT>\n{question}<|im_end|>\n<|im_start|>assistant\n"
INTERNVL_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                   "video_token": "<video>", "im_start_token": "<|im_start|>", "im_end_token": "<|im_end|>"}
RANDOM_INIT_MAX_TILES = 2


def tokens_per_tile(config) -> int:
    """Image tokens one tile becomes: (size / patch)² ViT patches, pixel-shuffled by downsample_ratio per side."""
    vision = config.vision_config
    side = vision.image_size[0] // vision.patch_size[0]
    return int(side * config.downsample_ratio) ** 2


class InternVLModel(GenerativeVLM):
    """InternVL: pixel-shuffled ViT tiles at the <IMG_CONTEXT> tokens of a Qwen2 / InternLM LM."""

    def _mask_cells(self, inputs: Inputs, image_keep: torch.Tensor) -> dict[str, torch.Tensor]:
        return repainted_pixels(self, inputs, image_keep)


class InternVLAdapter(HFGenerativeAdapter):
    """``internvl``: InternVLForConditionalGeneration."""

    name = "internvl"
    smoke = Smoke(hub_id="OpenGVLab/InternVL3-1B-hf", random_init_config=(
        ("vision_config.hidden_size", 32), ("vision_config.intermediate_size", 64),
        ("vision_config.num_hidden_layers", 2), ("vision_config.num_attention_heads", 4),
        ("vision_config.image_size", (32, 32)), ("vision_config.patch_size", (8, 8)),  # 4×4 patches → 2×2 tokens a tile
        ("text_config.hidden_size", 64), ("text_config.intermediate_size", 128), ("text_config.num_hidden_layers", 2),
        ("text_config.num_attention_heads", 4), ("text_config.num_key_value_heads", 2), ("text_config.vocab_size", 128),
        ("text_config.layer_types", None), ("text_config.bos_token_id", None), ("text_config.eos_token_id", None),
    ))
    model_cls, config_cls, loaded_cls = InternVLForConditionalGeneration, InternVLConfig, InternVLModel
    prompt_format = INTERNVL_FORMAT

    def random_processor(self, model):
        config = model.config
        tok = random_tokenizer(model, INTERNVL_FORMAT, INTERNVL_TOKENS)
        config.image_token_id = tok.context_image_token_id  # the random model reads the tokenizer's id
        height, width = config.vision_config.image_size
        image_processor = GotOcr2ImageProcessor(size={"height": height, "width": width}, crop_to_patches=True,
                                                min_patches=1, max_patches=RANDOM_INIT_MAX_TILES)
        return InternVLProcessor(image_processor=image_processor, tokenizer=tok,
                                 video_processor=InternVLVideoProcessor(size={"height": height, "width": width}),
                                 image_seq_length=tokens_per_tile(config))
