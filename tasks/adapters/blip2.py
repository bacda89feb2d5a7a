"""BLIP-2 image–text matching through transformers' ``Blip2ForImageTextRetrieval`` (adapter "blip2-itm").

``spec.source``: a hub id ("Salesforce/blip2-itm-vit-g") or a local folder.
In ITM mode the Q-Former runs one sequence, [query tokens | caption tokens],
through shared self-attention; the query tokens alone cross-attend to the
frozen ViT's patch features, so they carry the image. The score is the ITM
head's logit(match) − logit(no match), averaged over the query tokens (the
model's own ``logits_per_image``).

``trace`` (hooks on the modules; the Q-Former returns no maps otherwise):

- ``vision.i``: the ViT's self-attention; entropy_visual over all rows.
- ``qformer.i.self``: the shared self-attention. The query tokens stand for
  the image: visual_share is the attention mass of the caption rows
  ([CLS], words, [SEP]) on the query tokens, text_share their mass on the
  caption; entropy_visual averages the query rows, entropy_text the
  caption rows. ``spans`` describe this sequence: image = the queries.
- ``qformer.i.cross``: queries onto image patches (every ``cross_attention_frequency``-th
  layer). All keys are image tokens, so shares are NaN; the queries' entropy
  over the patches is entropy_visual.
"""
from __future__ import annotations

import torch
from transformers import Blip2Config, Blip2ForImageTextRetrieval

from tasks.adapters.contract import AttentionSummary, Inputs, Smoke, TokenSpans
from tasks.adapters.hooks import AttentionHooks, LayerMasks, tower_masks
from tasks.adapters.itm import FusionLayers, ItmAdapter, ItmModel, itm_margin
from tasks.adapters.loading import TINY_TEXT_TOWER, TINY_VISION_TOWER, config_pairs

_LAYERS = FusionLayers(r"qformer\.encoder\.layer", "attention", "qformer")


class Blip2ItmModel(ItmModel):
    family = "query-transformer fusion (ITM)"

    @property
    def n_queries(self) -> int:
        return self.model.config.num_query_tokens

    def _model_inputs(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        """The forward's arguments. Checkpoints whose config sets ``image_token_index`` expect the
        processor's placeholder ids in front of the caption (the model cuts them off again); the
        prepared inputs keep the bare caption, so players and masks index the caption alone."""
        t = self._on_device(inputs)
        ids, mask = t["input_ids"], t["attention_mask"]
        image_token = self.model.config.image_token_index
        if image_token is not None:
            b, n = ids.shape[0], self.n_queries
            ids = torch.cat([torch.full((b, n), image_token, dtype=ids.dtype, device=ids.device), ids], dim=1)
            mask = torch.cat([torch.ones((b, n), dtype=mask.dtype, device=mask.device), mask], dim=1)
        return {"pixel_values": t["pixel_values"], "input_ids": ids, "attention_mask": mask,
                "use_image_text_matching_head": True}

    @torch.no_grad()
    def score(self, inputs: Inputs) -> torch.Tensor:
        return itm_margin(self.model(**self._model_inputs(inputs)).logits_per_image)

    def spans(self, n_text: int) -> TokenSpans:
        n = self.n_queries
        return TokenSpans(image=(0, n), text=(n, n + n_text), special=(n,))  # queries, caption, its [CLS]

    @torch.no_grad()
    def trace(self, inputs: Inputs, keep_maps: int = 0) -> AttentionSummary:
        args = self._model_inputs(inputs)
        text_valid = inputs.tensors["attention_mask"].bool().to(self.device)  # [B, T] caption tokens
        b, n_text, nq = text_valid.shape[0], text_valid.shape[1], self.n_queries
        queries = torch.zeros(b, nq + n_text, dtype=torch.bool, device=self.device)
        queries[:, :nq] = True
        caption = torch.cat([torch.zeros(b, nq, dtype=torch.bool, device=self.device), text_valid], dim=1)

        def masks(layer: str, probs: torch.Tensor) -> LayerMasks:
            if layer.startswith("vision"):
                return tower_masks(probs, "image")
            if layer.endswith(".self"):
                return LayerMasks(query_rows=caption, image_cols=queries, text_cols=caption,
                                  image_rows=queries, text_rows=caption)
            q, k, dev = probs.shape[-2], probs.shape[-1], probs.device  # cross: queries onto patches
            every_q, none_q = torch.ones(q, dtype=torch.bool, device=dev), torch.zeros(q, dtype=torch.bool, device=dev)
            return LayerMasks(query_rows=every_q, image_cols=torch.ones(k, dtype=torch.bool, device=dev),
                              text_cols=torch.zeros(k, dtype=torch.bool, device=dev), image_rows=every_q,
                              text_rows=none_q)

        with AttentionHooks(self.model, _LAYERS.attention, masks, cross=_LAYERS.cross, rename=_LAYERS.name,
                            keep_maps=keep_maps, n_image_tokens=nq, n_text_tokens=int(text_valid.sum(1).max()),
                            n_text_per_sample=text_valid.sum(1).cpu(), spans=self.spans(n_text)) as hooks:
            self.model(**args)
        return hooks.summary


SMOKE = Smoke(hub_id="Salesforce/blip2-itm-vit-g", random_init_config=config_pairs({
    "num_query_tokens": 4, "image_text_hidden_size": 16,
    "qformer_config": TINY_TEXT_TOWER | {"cross_attention_frequency": 2},
    "vision_config": TINY_VISION_TOWER,
}))


class Blip2ItmAdapter(ItmAdapter):
    """Opens ``Blip2ForImageTextRetrieval`` checkpoints (hub id or local folder)."""

    name = "blip2-itm"
    smoke = SMOKE
    model_cls, config_cls, loaded_cls = Blip2ForImageTextRetrieval, Blip2Config, Blip2ItmModel
    # ITM runs the caption through the Q-Former (its default config has no text layers)
    random_defaults = (*ItmAdapter.random_defaults, ("qformer_config.use_qformer_text_input", True))

    def text_config(self, config):
        return config.qformer_config  # the caption runs through the Q-Former
