"""BLIP image–text matching through transformers' ``BlipForImageTextRetrieval`` (adapter "blip-itm").

``spec.source``: a hub id ("Salesforce/blip-itm-base-coco") or a local folder.
The score is the ITM head's logit(match) − logit(no match) on the text
[CLS], computed with ``use_itm_head=True``: the text encoder reads the image
through cross-attention in every layer.

``trace`` hooks the modules themselves (BLIP returns no cross-attention maps
otherwise):

- ``vision.i``: the ViT's self-attention; entropy_visual over all rows.
- ``text.i.self``: the text encoder's self-attention (text keys only):
  entropy_text over real tokens; shares NaN.
- ``text.i.cross``: text rows onto image keys. Every key is an image token,
  so the visual share is 1 by construction: shares are NaN, and the
  entropy of the text rows over the image tokens is entropy_text (entropies
  follow the query's modality).

BLIP's attention-mass visual share is therefore NaN everywhere — in this
architecture the image enters only through cross-attention, whose mass
always goes to the image; the ablation and Shapley metrics measure its use.
``spans`` is None: text and image are separate sequences.
"""
from __future__ import annotations

import re

import torch
from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor

from tasks.adapters.base import AttentionSummary, Inputs, Smoke
from tasks.adapters.hf_common import (
    AttentionHooks,
    HFAdapter,
    ImageTextModel,
    LayerMasks,
    bert_fallback_tokenizer,
    checkpoint_processors,
    tower_masks,
)

FAMILY = "cross-attention fusion (ITM)"
CAPABILITIES = frozenset({"score", "mask", "mask_tokens", "trace", "maps"})
_ATTENTION = (r"vision_model\.encoder\.layers\.(?P<vision>\d+)\.self_attn"
              r"|text_encoder\.encoder\.layer\.(?P<text>\d+)\.(?P<kind>attention|crossattention)\.self")
_CROSS = r"text_encoder\.encoder\.layer\.\d+\.crossattention\.self"


def _layer_name(module: str) -> str:
    m = re.fullmatch(_ATTENTION, module)
    if m["vision"] is not None:
        return f"vision.{m['vision']}"
    return f"text.{m['text']}.{'cross' if m['kind'] == 'crossattention' else 'self'}"


def itm_margin(logits: torch.Tensor) -> torch.Tensor:
    """[B, 2] ITM logits (no match, match) → logit(match) − logit(no match), the log-odds of a match."""
    return (logits[:, 1] - logits[:, 0]).float().cpu()


class BlipItmModel(ImageTextModel):
    family = FAMILY
    capabilities = CAPABILITIES

    @property
    def n_image_tokens(self) -> int:
        vision = self.model.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2 + 1  # patches + CLS

    @torch.no_grad()
    def score(self, inputs: Inputs) -> torch.Tensor:
        t = self._on_device(inputs)
        out = self.model(input_ids=t["input_ids"], pixel_values=t["pixel_values"],
                         attention_mask=t["attention_mask"], use_itm_head=True)
        return itm_margin(out.itm_score)

    @torch.no_grad()
    def trace(self, inputs: Inputs, keep_maps: int = 0) -> AttentionSummary:
        t = self._on_device(inputs)
        valid = t["attention_mask"].bool()

        def masks(layer: str, probs: torch.Tensor) -> LayerMasks:
            if layer.startswith("vision"):
                return tower_masks(probs, "image")
            if layer.endswith(".self"):
                return tower_masks(probs, "text", valid)
            k, dev = probs.shape[-1], probs.device  # cross: text rows onto image keys
            none_k = torch.zeros(k, dtype=torch.bool, device=dev)
            return LayerMasks(query_rows=valid, image_cols=torch.ones(k, dtype=torch.bool, device=dev),
                              text_cols=none_k, image_rows=torch.zeros_like(valid), text_rows=valid)

        with AttentionHooks(self.model, _ATTENTION, masks, cross=_CROSS, rename=_layer_name, keep_maps=keep_maps,
                            n_image_tokens=self.n_image_tokens, n_text_tokens=int(valid.sum(1).max()),
                            n_text_per_sample=valid.sum(1).cpu()) as hooks:
            self.model(input_ids=t["input_ids"], pixel_values=t["pixel_values"],
                       attention_mask=t["attention_mask"], use_itm_head=True)
        return hooks.summary


SMOKE = Smoke(hub_id="Salesforce/blip-itm-base-coco", random_init_config=(
    ("projection_dim", 16), ("image_text_hidden_size", 16),
    ("text_config.hidden_size", 32), ("text_config.intermediate_size", 37), ("text_config.num_hidden_layers", 2),
    ("text_config.num_attention_heads", 4), ("text_config.vocab_size", 64), ("text_config.max_position_embeddings", 16),
    ("text_config.bos_token_id", 1), ("text_config.sep_token_id", 2),
    ("vision_config.hidden_size", 32), ("vision_config.intermediate_size", 37), ("vision_config.num_hidden_layers", 2),
    ("vision_config.num_attention_heads", 4), ("vision_config.image_size", 32), ("vision_config.patch_size", 8),
))


class BlipItmAdapter(HFAdapter):
    """Opens ``BlipForImageTextRetrieval`` checkpoints (hub id or local folder)."""

    name = "blip-itm"
    family = FAMILY
    capabilities = CAPABILITIES
    smoke = SMOKE
    model_cls, config_cls = BlipForImageTextRetrieval, BlipConfig
    # The ViT's initializer_range of 1e-10 suits checkpoint loading only: drawn at that scale, a
    # random ViT gives every image the same features, and the model would ignore images.
    random_defaults = (("vision_config.initializer_range", 0.02),)

    def load(self, spec) -> BlipItmModel:
        model, random_init, revision = self.open(spec)
        text, size = model.config.text_config, model.config.vision_config.image_size
        image_processor, tokenizer = checkpoint_processors(
            spec, lambda: BlipImageProcessor(size={"height": size, "width": size}),
            lambda: bert_fallback_tokenizer(text.pad_token_id, text.max_position_embeddings))
        return BlipItmModel(spec, model, image_processor, tokenizer, revision, random_init, self.device,
                            text.max_position_embeddings)
