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

import torch
from transformers import BlipConfig, BlipForImageTextRetrieval

from tasks.adapters.contract import AttentionSummary, Inputs, Smoke
from tasks.adapters.hooks import AttentionHooks, LayerMasks, tower_masks
from tasks.adapters.itm import FusionLayers, ItmAdapter, ItmModel, itm_margin
from tasks.adapters.loading import TINY_TEXT_TOWER, TINY_VISION_TOWER, config_pairs

_LAYERS = FusionLayers(r"text_encoder\.encoder\.layer", "self", "text")


class BlipItmModel(ItmModel):
    family = "cross-attention fusion (ITM)"

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

        with AttentionHooks(self.model, _LAYERS.attention, masks, cross=_LAYERS.cross, rename=_LAYERS.name,
                            keep_maps=keep_maps, n_image_tokens=self.n_image_tokens,
                            n_text_tokens=int(valid.sum(1).max()), n_text_per_sample=valid.sum(1).cpu()) as hooks:
            self.model(input_ids=t["input_ids"], pixel_values=t["pixel_values"],
                       attention_mask=t["attention_mask"], use_itm_head=True)
        return hooks.summary


SMOKE = Smoke(hub_id="Salesforce/blip-itm-base-coco", random_init_config=config_pairs({
    "projection_dim": 16, "image_text_hidden_size": 16,
    "text_config": TINY_TEXT_TOWER | {"bos_token_id": 1, "sep_token_id": 2},
    "vision_config": TINY_VISION_TOWER,
}))


class BlipItmAdapter(ItmAdapter):
    """Opens ``BlipForImageTextRetrieval`` checkpoints (hub id or local folder)."""

    name = "blip-itm"
    smoke = SMOKE
    model_cls, config_cls, loaded_cls = BlipForImageTextRetrieval, BlipConfig, BlipItmModel
