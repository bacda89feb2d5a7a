"""What BLIP and BLIP-2 share: an image–text matching (ITM) head read as log-odds, a ViT image tower,
a BERT-style fusion encoder whose layers are named ``vision.i`` / ``<stream>.i.self`` / ``<stream>.i.cross``,
and square ``BlipImageProcessor`` inputs for random-init runs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from transformers import BlipImageProcessor

from tasks.adapters.image_text import HFAdapter, ImageTextModel

ITM_CAPABILITIES = frozenset({"score", "mask", "mask_tokens", "trace", "maps"})


def itm_margin(logits: torch.Tensor) -> torch.Tensor:
    """[B, 2] ITM logits (no match, match) → logit(match) − logit(no match), the log-odds of a match."""
    return (logits[:, 1] - logits[:, 0]).float().cpu()


@dataclass(frozen=True)
class FusionLayers:
    """The attention modules of a ViT image tower plus a BERT-style fusion encoder, and their layer names.

    ``encoder`` is the regex of the fusion encoder's layer list, ``leaf`` the module under each layer's
    ``attention`` / ``crossattention`` that returns the probabilities; layers are named ``vision.i``,
    ``{stream}.i.self`` and ``{stream}.i.cross``.
    """

    encoder: str
    leaf: str
    stream: str

    @property
    def attention(self) -> str:
        return (r"vision_model\.encoder\.layers\.(?P<vision>\d+)\.self_attn"
                rf"|{self.encoder}\.(?P<layer>\d+)\.(?P<kind>attention|crossattention)\.{self.leaf}")

    @property
    def cross(self) -> str:
        return rf"{self.encoder}\.\d+\.crossattention\.{self.leaf}"

    def name(self, module: str) -> str:
        m = re.fullmatch(self.attention, module)
        if m["vision"] is not None:
            return f"vision.{m['vision']}"
        return f"{self.stream}.{m['layer']}.{'cross' if m['kind'] == 'crossattention' else 'self'}"


class ItmModel(ImageTextModel):
    """A BLIP-family model: the ITM log-odds score, trace with maps, whole-modality and MM-SHAP masks."""

    capabilities = ITM_CAPABILITIES


class ItmAdapter(HFAdapter):
    """A BLIP-family ITM model; random-init runs get a square ``BlipImageProcessor`` at the ViT's size."""

    # The ViT's initializer_range of 1e-10 suits checkpoint loading only: drawn at that scale, a
    # random ViT gives every image the same features, and the model would ignore images.
    random_defaults = (("vision_config.initializer_range", 0.02),)

    def fallback_image_processor(self, config) -> BlipImageProcessor:
        size = config.vision_config.image_size
        return BlipImageProcessor(size={"height": size, "width": size})
