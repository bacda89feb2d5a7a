"""ALIGN (EfficientNet image tower + BERT text tower) through transformers' ``AlignModel`` (adapter "align").

Same dual-encoder body as CLIP: score = cosine(image, text) / temperature,
separable towers, whole-modality and grid masking. The image tower is a
CNN, so ``trace`` has text layers only (``text.i``, entropy_text over real
tokens); entropy_visual and both shares are NaN and ``n_image_tokens`` is 0.
"""
from __future__ import annotations

import torch
from transformers import AlignConfig, AlignModel, EfficientNetImageProcessor

from tasks.adapters.contract import Smoke
from tasks.adapters.dual_encoder import DualEncoderModel
from tasks.adapters.image_text import HFAdapter
from tasks.adapters.loading import TINY_TEXT_TOWER, config_pairs


class AlignLoadedModel(DualEncoderModel):
    attention = r"(?P<tower>text)_model\.encoder\.layer\.(?P<i>\d+)\.attention\.self"
    tower_names = {"text": "text"}
    n_image_tokens = 0  # EfficientNet: feature maps, no tokens

    def logit_scale(self) -> torch.Tensor:
        return 1.0 / self.model.temperature


def align_image_processor(size: int) -> EfficientNetImageProcessor:
    """ALIGN's own preprocessing at ``size``: pixels rescaled to [-1, 1], no mean/std normalisation."""
    return EfficientNetImageProcessor(size={"height": size, "width": size}, do_center_crop=False,
                                      rescale_factor=1 / 127.5, rescale_offset=True, do_normalize=False,
                                      include_top=False)


SMOKE = Smoke(hub_id="kakaobrain/align-base", random_init_config=config_pairs({
    "projection_dim": 32,
    "text_config": TINY_TEXT_TOWER,
    "vision_config": {  # a tiny EfficientNet
        "image_size": 32, "width_coefficient": 0.1, "depth_coefficient": 0.1, "hidden_dim": 32,
        # untrained batch norms: at the default 0.02 the CNN's activations vanish (~1e-30) and the
        # model's own forward turns them into NaN; 0.5 keeps them O(1e3)
        "initializer_range": 0.5,
    },
}))


class AlignAdapter(HFAdapter):
    """Opens ``AlignModel`` checkpoints (hub id such as "kakaobrain/align-base", or a local folder)."""

    name = "align"
    smoke = SMOKE
    model_cls, config_cls, loaded_cls = AlignModel, AlignConfig, AlignLoadedModel

    def fallback_image_processor(self, config) -> EfficientNetImageProcessor:
        return align_image_processor(config.vision_config.image_size)
