"""Qwen2-VL and Qwen2.5-VL behind the adapter contract (yes/no log-odds, see generative.py).

The image is resized to a multiple of patch × merge pixels keeping its
aspect ratio, cut into patches and merged 2×2, so the number of image tokens
(``<|image_pad|>`` between ``<|vision_start|>`` / ``<|vision_end|>``) varies
with the image size: the spans of a batch are per sample
(``Inputs.meta['spans']``). ``pixel_values`` are the flattened patches of
all images, [Σ t·h·w, C·T·P·P], ordered by merge window; a grid cell is
masked by zeroing exactly the cell's pixels inside those patches (the same
cell geometry as ``pixel_keep`` on the resized image).

Random-init runs cap the resized image at 4×4 merged tokens (16 image
tokens) so a CPU run stays small; checkpoints use their own processor.
"""
from __future__ import annotations

import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from tasks.adapters.contract import Inputs, Smoke
from tasks.adapters.generative import GenerativeVLM, HFGenerativeAdapter, random_tokenizer
from tasks.diagnostics.masking import pixel_keep

QWEN_FORMAT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
               "<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n")
QWEN_TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
               "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
               "im_start_token": "<|im_start|>", "im_end_token": "<|im_end|>"}
RANDOM_INIT_TOKENS_PER_SIDE = 4  # merged tokens per image side at most, random-init runs only


def patch_keep(image_keep: torch.Tensor, grid_hw: tuple[int, int], patch: int, merge: int) -> torch.Tensor:
    """[g, g] cell mask → [h·w, P, P] pixel mask in the processor's patch order (merge windows, then rows)."""
    h, w = grid_hw
    keep = pixel_keep(image_keep[None], h * patch, w * patch)[0]
    return keep.view(h // merge, merge, patch, w // merge, merge, patch).permute(0, 3, 1, 4, 2, 5).reshape(
        h * w, patch, patch)


class Qwen2VLModel(GenerativeVLM):
    """Qwen2-VL / Qwen2.5-VL: merged ViT patches at the <|image_pad|> tokens, M-RoPE positions."""

    def _mask_cells(self, inputs: Inputs, image_keep: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels = inputs.tensors["pixel_values"]
        ip = self.processor.image_processor
        out, start = pixels.clone(), 0
        for i, (t, h, w) in enumerate(inputs.tensors["image_grid_thw"].tolist()):
            n = t * h * w
            if t != 1:
                raise ValueError(f"sample {inputs.sample_ids[i]}: a still image has grid_t 1, got {t}")
            keep = patch_keep(image_keep[i], (h, w), ip.patch_size, ip.merge_size).to(pixels.device)
            block = out[start:start + n].view(n, -1, ip.patch_size, ip.patch_size)  # channels × time, P, P
            out[start:start + n] = (block * keep[:, None].to(pixels.dtype)).view(n, -1)
            start += n
        return {"pixel_values": out}


# Tiny smoke models: one 2-layer LM and a 2-block vision tower per generation (4-px patches).
SMOKE_TEXT = (
    ("text_config.hidden_size", 128), ("text_config.intermediate_size", 128), ("text_config.num_hidden_layers", 2),
    ("text_config.num_attention_heads", 1), ("text_config.num_key_value_heads", 1), ("text_config.vocab_size", 128),
    ("text_config.layer_types", None), ("text_config.bos_token_id", None), ("text_config.eos_token_id", None),
)
SMOKE_QWEN2_VISION = (("vision_config.depth", 2), ("vision_config.embed_dim", 32), ("vision_config.hidden_size", 128),
                      ("vision_config.num_heads", 4), ("vision_config.patch_size", 4))
SMOKE_QWEN25_VISION = (("vision_config.depth", 2), ("vision_config.hidden_size", 32),
                       ("vision_config.intermediate_size", 64), ("vision_config.out_hidden_size", 128),
                       ("vision_config.num_heads", 4), ("vision_config.patch_size", 4), ("vision_config.window_size", 16),
                       ("vision_config.fullatt_block_indexes", (1,)))


class Qwen2VLAdapter(HFGenerativeAdapter):
    """``qwen2-vl``: Qwen2VLForConditionalGeneration (Qwen/Qwen2-VL-2B-Instruct and kin)."""

    name = "qwen2-vl"
    smoke = Smoke(hub_id="Qwen/Qwen2-VL-2B-Instruct", random_init_config=SMOKE_TEXT + SMOKE_QWEN2_VISION)
    model_cls, config_cls, loaded_cls = Qwen2VLForConditionalGeneration, Qwen2VLConfig, Qwen2VLModel
    processor_cls = Qwen2VLProcessor
    prompt_format = QWEN_FORMAT

    def random_processor(self, model):
        config, vision = model.config, model.config.vision_config
        tok = random_tokenizer(model, QWEN_FORMAT, QWEN_TOKENS)
        for key in ("image", "video", "vision_start", "vision_end"):  # the random model reads the tokenizer's ids
            setattr(config, f"{key}_token_id", getattr(tok, f"{key}_token_id"))
        factor = vision.patch_size * vision.spatial_merge_size
        geometry = {"patch_size": vision.patch_size, "merge_size": vision.spatial_merge_size,
                    "temporal_patch_size": vision.temporal_patch_size}
        image_processor = Qwen2VLImageProcessor(**geometry, min_pixels=factor * factor,
                                                max_pixels=(RANDOM_INIT_TOKENS_PER_SIDE * factor) ** 2)
        return self.processor_cls(image_processor=image_processor, tokenizer=tok,
                                  video_processor=Qwen2VLVideoProcessor(**geometry))


class Qwen25VLAdapter(Qwen2VLAdapter):
    """``qwen2.5-vl``: Qwen2_5_VLForConditionalGeneration (Qwen/Qwen2.5-VL-3B-Instruct and kin)."""

    name = "qwen2.5-vl"
    smoke = Smoke(hub_id="Qwen/Qwen2.5-VL-3B-Instruct", random_init_config=SMOKE_TEXT + SMOKE_QWEN25_VISION)
    model_cls, config_cls = Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig
    processor_cls = Qwen2_5_VLProcessor
