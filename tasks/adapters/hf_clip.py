"""Official CLIP through transformers' ``CLIPModel`` (adapter "clip").

``spec.source`` is a hub id ("openai/clip-vit-base-patch32") or a folder
written by ``save_pretrained``. The score is the model's own pair logit,
cosine(image, text) × ``logit_scale.exp()``.

A dual encoder has no cross-modal attention, so ``trace`` reports each
tower's self-attention, as the open_clip adapter does: ``vision.i`` layers
carry ``entropy_visual`` (all rows: CLS + patches), ``text.i`` layers carry
``entropy_text`` (rows of real tokens; CLIP's causal mask is kept, so early
rows are structurally low entropy). Both shares are NaN and ``spans`` is
None: the towers do not share one sequence.

Masked text tokens become id 0 ("!", what open_clip pads with): CLIP's BPE
has no [MASK], and its pad/unk token is the EOT the text is pooled from.
"""
from __future__ import annotations

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from tasks.adapters.contract import Smoke
from tasks.adapters.dual_encoder import DualEncoderModel
from tasks.adapters.image_text import HFAdapter
from tasks.adapters.loading import TINY_TEXT_TOWER, TINY_VISION_TOWER, config_pairs
from tasks.adapters.preprocessing import caption_vocab, clip_crop, fallback_tokenizer


class HFClipModel(DualEncoderModel):
    attention = r"(?P<tower>text|vision)_model\.encoder\.layers\.(?P<i>\d+)\.self_attn"
    tower_names = {"vision": "vision", "text": "text"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        vision = self.model.config.vision_config
        self.n_image_tokens = (vision.image_size // vision.patch_size) ** 2 + 1  # patches + CLS

    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()


def clip_fallback_tokenizer(text_config):
    """BOS … EOS with the config's ids; CLIP pools at the first EOS, or at the largest id when eos_token_id == 2
    (configs written before transformers#24773), so EOS then takes the largest id of the vocabulary."""
    eos = text_config.vocab_size - 1 if text_config.eos_token_id == 2 else text_config.eos_token_id
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                "unk_token": "<|unk|>", "mask_token": "<|mask|>"}
    return fallback_tokenizer(caption_vocab(), specials, ids={"<|startoftext|>": text_config.bos_token_id,
                                                              "<|endoftext|>": eos},
                              max_length=text_config.max_position_embeddings)


SMOKE = Smoke(hub_id="openai/clip-vit-base-patch32", random_init_config=config_pairs({
    "projection_dim": 16,
    "text_config": TINY_TEXT_TOWER | {"bos_token_id": 62, "eos_token_id": 63, "pad_token_id": 63},
    "vision_config": TINY_VISION_TOWER,
}))


class ClipAdapter(HFAdapter):
    """Opens ``CLIPModel`` checkpoints (hub id or local folder)."""

    name = "clip"
    smoke = SMOKE
    model_cls, config_cls, loaded_cls = CLIPModel, CLIPConfig, HFClipModel

    def fallback_image_processor(self, config) -> CLIPImageProcessor:
        size = config.vision_config.image_size
        return CLIPImageProcessor(**clip_crop(size))

    def fallback_tokenizer(self, config):
        return clip_fallback_tokenizer(config.text_config)
