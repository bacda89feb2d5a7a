"""The dual-encoder body (CLIP, ALIGN): each tower embeds its modality alone, the score is a scaled cosine.

A dual encoder has no cross-modal attention, so ``trace`` reports each tower's self-attention
(``vision.i`` carries entropy_visual, ``text.i`` entropy_text, both shares NaN), and the towers are
separable: the Shapley passes embed each modality once per distinct row (``tasks.adapters.towers``).
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from tasks.adapters.contract import AttentionSummary, Inputs
from tasks.adapters.hooks import AttentionHooks, tower_masks
from tasks.adapters.image_text import ImageTextModel
from tasks.adapters.towers import encode_distinct

DUAL_ENCODER = "dual encoder"
DUAL_CAPABILITIES = frozenset({"score", "mask", "mask_tokens", "separable", "trace", "maps"})


class DualEncoderModel(ImageTextModel):
    """Separable image–text scoring: embeddings of each tower, then a scaled cosine.

    Subclasses give ``logit_scale()``, the attention-module pattern
    ``attention`` (regex on module names, group "tower" = which tower and
    group "i" = layer index) and ``tower_names`` (module tower → "vision"/"text").
    """

    family = DUAL_ENCODER
    capabilities = DUAL_CAPABILITIES
    attention: str = ""
    tower_names: dict[str, str] = {}
    n_image_tokens = 0

    def logit_scale(self) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def encode_image(self, inputs: Inputs, image_keep: torch.Tensor | None = None) -> torch.Tensor:
        """[B, D] unit image embeddings; grid cells not in ``image_keep`` are zeroed first (as in mask_tokens)."""
        dtype = next(self.model.parameters()).dtype
        pixels = self.masked_pixels(inputs, image_keep)
        return encode_distinct(lambda x: self._image_embedding(x.to(self.device, dtype=dtype)), pixels)

    @torch.no_grad()
    def encode_text(self, inputs: Inputs, text_keep: torch.Tensor | None = None) -> torch.Tensor:
        """[B, D] unit text embeddings; caption tokens not in ``text_keep`` become the mask id first."""
        ids, mask = self.masked_ids(inputs, text_keep), inputs.tensors["attention_mask"]
        return encode_distinct(lambda i, m: self._text_embedding(i.to(self.device), m.to(self.device)), ids, mask)

    def _image_embedding(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.get_image_features(pixel_values=pixels).pooler_output.float(), dim=-1).cpu()

    def _text_embedding(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output.float(),
                           dim=-1).cpu()

    @torch.no_grad()
    def similarity(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        return (image_emb.float() * text_emb.float()).sum(-1) * self.logit_scale().float().cpu()

    def score(self, inputs: Inputs) -> torch.Tensor:
        return self.similarity(self.encode_image(inputs), self.encode_text(inputs))

    def _layer_name(self, module: str) -> str:
        m = re.fullmatch(self.attention, module)
        return f"{self.tower_names[m['tower']]}.{m['i']}"

    @torch.no_grad()
    def trace(self, inputs: Inputs, keep_maps: int = 0) -> AttentionSummary:
        """Each tower's per-layer self-attention entropy, reduced inside forward hooks.

        Both towers run whole (a CNN image tower too, without hooks of its own), so the traced forward also
        gives the embeddings and the score: the Shapley passes then need no unmasked pass of their own.
        """
        t = self._on_device(inputs)
        valid = t["attention_mask"].bool()

        def masks(layer: str, probs: torch.Tensor):
            return tower_masks(probs, "image" if layer.startswith("vision") else "text", valid)

        with AttentionHooks(self.model, self.attention, masks, rename=self._layer_name, keep_maps=keep_maps,
                            n_image_tokens=self.n_image_tokens, n_text_tokens=int(valid.sum(1).max()),
                            n_text_per_sample=valid.sum(1).cpu()) as hooks:
            image_emb = self._image_embedding(t["pixel_values"])
            text_emb = self._text_embedding(t["input_ids"], t["attention_mask"])
        hooks.summary.score, hooks.summary.embeddings = self.similarity(image_emb, text_emb), (image_emb, text_emb)
        return hooks.summary
