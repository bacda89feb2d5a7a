"""Official CLIP through transformers' ``CLIPModel`` (adapter "clip"); also the dual-encoder body ALIGN reuses.

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

import re

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from tasks.adapters.base import AttentionSummary, Inputs, Smoke

from tasks.adapters.towers import encode_distinct
from tasks.adapters.hf_common import (
    AttentionHooks,
    HFAdapter,
    ImageTextModel,
    caption_vocab,
    checkpoint_processors,
    fallback_tokenizer,
    tower_masks,
)

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


SMOKE = Smoke(hub_id="openai/clip-vit-base-patch32", random_init_config=(
    ("projection_dim", 16),
    ("text_config.hidden_size", 32), ("text_config.intermediate_size", 37), ("text_config.num_hidden_layers", 2),
    ("text_config.num_attention_heads", 4), ("text_config.vocab_size", 64), ("text_config.max_position_embeddings", 16),
    ("text_config.bos_token_id", 62), ("text_config.eos_token_id", 63), ("text_config.pad_token_id", 63),
    ("vision_config.hidden_size", 32), ("vision_config.intermediate_size", 37), ("vision_config.num_hidden_layers", 2),
    ("vision_config.num_attention_heads", 4), ("vision_config.image_size", 32), ("vision_config.patch_size", 8),
))


class ClipAdapter(HFAdapter):
    """Opens ``CLIPModel`` checkpoints (hub id or local folder)."""

    name = "clip"
    family = DUAL_ENCODER
    capabilities = DUAL_CAPABILITIES
    smoke = SMOKE
    model_cls, config_cls = CLIPModel, CLIPConfig

    def load(self, spec) -> HFClipModel:
        model, random_init, revision = self.open(spec)
        text, size = model.config.text_config, model.config.vision_config.image_size
        image_processor, tokenizer = checkpoint_processors(
            spec, lambda: CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
            lambda: clip_fallback_tokenizer(text))
        return HFClipModel(spec, model, image_processor, tokenizer, revision, random_init, self.device,
                           text.max_position_embeddings)
