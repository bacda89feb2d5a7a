"""ViLT through transformers' ``ViltForImageAndTextRetrieval`` (adapter "vilt").

``spec.source``: a hub id ("dandelin/vilt-b32-finetuned-coco") or a local
folder. One transformer reads one sequence, [caption tokens | image CLS |
image patches]; the score is the retrieval head's logit on the pooled text
[CLS] (position 0).

ViLT's processor keeps each image's aspect ratio and pads the batch to a
common size (``pixel_mask``); the model then embeds as many patches as the
largest image has, real patches first, padding patches after (masked from
attention). The spans and every per-sample mask below follow that layout, so
padding rows and keys never enter a statistic. (When a config caps
``max_image_length`` below an image's patch count, ViLT samples that many
patches at random: all are real, and the layout still holds.)

``trace``: per layer, the attention mass of the caption rows ([CLS], words,
[SEP]) onto the image tokens (image CLS + real patches) vs onto the caption
(visual_share / text_share); entropy_visual over image rows, entropy_text
over caption rows; and attention rollout of the [CLS] row
(``extras["rollout_visual_share"]``, capability "rollout").
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from transformers import ViltConfig, ViltForImageAndTextRetrieval, ViltImageProcessor

from tasks.adapters.contract import AttentionSummary, Inputs, Smoke, TokenSpans
from tasks.adapters.hooks import AttentionHooks, LayerMasks
from tasks.adapters.image_text import HFAdapter, ImageTextModel
from tasks.adapters.loading import TINY_TEXT_TOWER, TINY_VISION_TOWER, config_pairs
from tasks.diagnostics.rollout import Rollout

FAMILY = "single-stream fusion"
CAPABILITIES = frozenset({"score", "mask", "mask_tokens", "trace", "maps", "rollout"})
_ATTENTION = r"vilt\.encoder\.layer\.(?P<i>\d+)\.attention\.attention"


def _want_maps(_module, args, kwargs):
    # ViltAttention calls its self-attention as (hidden_states, attention_mask, output_attentions).
    if len(args) >= 3:
        return (*args[:2], True, *args[3:]), kwargs
    return args, {**kwargs, "output_attentions": True}


def real_patches(pixel_mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B] patches of real pixels per image, counted as ``ViltEmbeddings.visual_embed`` does."""
    h, w = pixel_mask.shape[-2] // patch_size, pixel_mask.shape[-1] // patch_size
    grid = F.interpolate(pixel_mask[:, None].float(), size=(h, w)).long()[:, 0]
    return grid.sum(dim=1)[:, 0] * grid.sum(dim=2)[:, 0]


class ViltLoadedModel(ImageTextModel):
    family = FAMILY
    capabilities = CAPABILITIES

    def _forward(self, t: dict[str, torch.Tensor]):
        return self.model(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
                          pixel_values=t["pixel_values"], pixel_mask=t["pixel_mask"])

    @torch.no_grad()
    def score(self, inputs: Inputs) -> torch.Tensor:
        return self._forward(self._on_device(inputs)).logits[:, 0].float().cpu()

    def layout(self, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor, TokenSpans]:
        """(caption keys [B, S], image keys [B, S], spans) of the sequence the encoder sees."""
        cfg = self.model.config
        text = inputs.tensors["attention_mask"].bool()
        b, n_text = text.shape
        real = real_patches(inputs.tensors["pixel_mask"], cfg.patch_size)
        n_patches = int(real.max())
        if isinstance(cfg.max_image_length, int) and cfg.max_image_length > 0:
            n_patches = min(n_patches, cfg.max_image_length)
        patch_real = torch.arange(n_patches)[None, :] < real[:, None]
        image = torch.cat([torch.zeros(b, n_text, dtype=torch.bool), torch.ones(b, 1, dtype=torch.bool),
                           patch_real], dim=1)
        caption = torch.cat([text, torch.zeros(b, 1 + n_patches, dtype=torch.bool)], dim=1)
        spans = TokenSpans(image=(n_text, n_text + 1 + n_patches), text=(0, n_text), special=(0, n_text))
        return caption, image, spans

    @torch.no_grad()
    def trace(self, inputs: Inputs, keep_maps: int = 0) -> AttentionSummary:
        caption, image, spans = self.layout(inputs)
        caption, image = caption.to(self.device), image.to(self.device)
        rollout = Rollout()

        def masks(_layer: str, probs: torch.Tensor) -> LayerMasks:
            if probs.shape[-1] != caption.shape[1]:
                raise RuntimeError(f"ViLT sequence has {probs.shape[-1]} tokens, the adapter expected "
                                   f"{caption.shape[1]}: the patch layout changed")
            return LayerMasks(query_rows=caption, image_cols=image, text_cols=caption, image_rows=image,
                              text_rows=caption)

        def observe(_layer: str, probs: torch.Tensor) -> dict[str, torch.Tensor]:
            rollout.update(probs)
            return {"rollout_visual_share": rollout.share(0, image, caption)}  # the pooled [CLS] row

        text_counts = inputs.tensors["attention_mask"].sum(1)
        with AttentionHooks(self.model, _ATTENTION, masks, request=_want_maps, observe=observe,
                            rename=lambda name: f"layer{re.fullmatch(_ATTENTION, name)['i']}", keep_maps=keep_maps,
                            n_image_tokens=spans.image[1] - spans.image[0], n_text_tokens=int(text_counts.max()),
                            n_text_per_sample=text_counts, spans=spans) as hooks:
            self._forward(self._on_device(inputs))
        return hooks.summary


# one stream: the text tower's fields and the patch grid on the same config
SMOKE = Smoke(hub_id="dandelin/vilt-b32-finetuned-coco",
              random_init_config=config_pairs(TINY_TEXT_TOWER | TINY_VISION_TOWER))


class ViltAdapter(HFAdapter):
    """Opens ``ViltForImageAndTextRetrieval`` checkpoints (hub id or local folder)."""

    name = "vilt"
    smoke = SMOKE
    model_cls, config_cls, loaded_cls = ViltForImageAndTextRetrieval, ViltConfig, ViltLoadedModel

    def text_config(self, config):
        return config  # one config for text and image

    def fallback_image_processor(self, config) -> ViltImageProcessor:
        return ViltImageProcessor(size={"shortest_edge": config.image_size}, size_divisor=config.patch_size)
