"""The shared body of transformers image–caption models (CLIP, ALIGN, BLIP, BLIP-2, ViLT).

``ImageTextModel`` is the LoadedModel body: prepare, whole-modality masks and MM-SHAP players;
``HFAdapter`` opens the model class and its processors. An architecture's file adds its score, its
trace and the fallback processors of a random-init run.
"""
from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from tasks.adapters.contract import Inputs, ModelSpec, Players
from tasks.adapters.loading import TransformersAdapter
from tasks.adapters.preprocessing import bert_fallback_tokenizer, checkpoint_processors, neutral_token_id
from tasks.diagnostics.masking import pixel_keep


def zero_grid_cells(pixels: torch.Tensor, keep: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """``pixels`` [B, C, H, W] with the cells of a g×g grid where ``keep`` [B, g, g] is False set to 0.

    Zero is the dataset mean after normalisation (the whole-image baseline).
    ``region`` [B, 2] gives each sample's (height, width) of real pixels at the
    top-left (ViLT pads images of other shapes); the grid covers that region.
    """
    b, _, h, w = pixels.shape
    if keep.dim() != 3 or keep.shape[0] != b or keep.shape[1] != keep.shape[2]:
        raise ValueError(f"image_keep must be [batch={b}, g, g] booleans, got shape {tuple(keep.shape)}")
    keep = keep.bool().cpu()
    if region is None:  # pixel_keep: the one grid geometry all adapters share
        return pixels.masked_fill(~pixel_keep(keep, h, w)[:, None].to(pixels.device), 0.0)
    out = pixels.clone()
    for i, (rh, rw) in enumerate(region.tolist()):
        drop = ~pixel_keep(keep[i : i + 1].cpu(), rh, rw)[0]  # [rh, rw]
        out[i, :, :rh, :rw] = out[i, :, :rh, :rw].masked_fill(drop.to(out.device), 0.0)
    return out


class ImageTextModel:
    """What transformers image–caption models share behind the LoadedModel contract.

    ``prepare`` runs the image processor and the tokenizer; ``mask``,
    ``players`` and ``mask_tokens`` edit the prepared tensors (pixels → 0 in
    normalised space, caption tokens → [MASK] or a neutral id, special tokens
    and padding untouched). Subclasses add ``score`` and ``trace``.
    """

    family = ""
    capabilities: frozenset[str] = frozenset()

    def __init__(self, spec: ModelSpec, model: nn.Module, image_processor, tokenizer, revision: str,
                 random_init: bool, device: str, max_text_length: int):
        self.spec, self.model, self.image_processor, self.tokenizer = spec, model, image_processor, tokenizer
        self.revision, self.random_init, self.device = revision, random_init, device
        self.max_text_length = max_text_length
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.mask_id = neutral_token_id(tokenizer)

    # -- inputs --
    def prepare(self, images: list[Image.Image], captions: list[str], sample_ids: list[str]) -> Inputs:
        if not len(images) == len(captions) == len(sample_ids):
            raise ValueError(f"prepare needs one caption and one id per image: got {len(images)} images, "
                             f"{len(captions)} captions, {len(sample_ids)} ids")
        pixels = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        text = self.tokenizer(list(captions), padding="longest", truncation=True, max_length=self.max_text_length,
                              return_tensors="pt")
        tensors = {"pixel_values": pixels["pixel_values"], "input_ids": text["input_ids"],
                   "attention_mask": text["attention_mask"]}
        if "pixel_mask" in pixels:
            tensors["pixel_mask"] = pixels["pixel_mask"]
        return Inputs(tensors=tensors, sample_ids=list(sample_ids))

    def _on_device(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        dtype = next(self.model.parameters()).dtype
        return {k: v.to(self.device, dtype=dtype) if v.is_floating_point() else v.to(self.device)
                for k, v in inputs.tensors.items()}

    def text_players(self, inputs: Inputs) -> torch.Tensor:
        """[B, T]: caption tokens, i.e. not padding and not a special token (CLS/SEP/BOS/EOS)."""
        ids = inputs.tensors["input_ids"]
        return inputs.tensors["attention_mask"].bool() & ~torch.isin(ids, self.special_ids)

    def players(self, inputs: Inputs) -> Players:
        return Players(text_valid=self.text_players(inputs))

    def image_region(self, inputs: Inputs) -> torch.Tensor | None:
        """[B, 2] (height, width) of real pixels when images are padded to a common size, else None."""
        mask = inputs.tensors.get("pixel_mask")
        if mask is None:
            return None
        return torch.stack([mask.any(-1).sum(-1), mask.any(-2).sum(-1)], dim=-1)

    def _with(self, inputs: Inputs, **tensors: torch.Tensor) -> Inputs:
        return Inputs(tensors={**inputs.tensors, **tensors}, sample_ids=list(inputs.sample_ids),
                      meta=dict(inputs.meta))

    def mask(self, inputs: Inputs, image_keep: bool, text_keep: bool) -> Inputs:
        """Whole-modality baselines: the mean image (zeros after normalisation); every caption token → mask id.

        Special tokens and padding keep their ids and positions, so the read-out
        token (CLS / EOT) and the sequence length do not change.
        """
        pixels, ids = inputs.tensors["pixel_values"], inputs.tensors["input_ids"]
        if not image_keep:
            pixels = torch.zeros_like(pixels)
        if not text_keep:
            ids = ids.masked_fill(self.text_players(inputs), self.mask_id)
        return self._with(inputs, pixel_values=pixels, input_ids=ids)

    def masked_pixels(self, inputs: Inputs, image_keep: torch.Tensor | None) -> torch.Tensor:
        pixels = inputs.tensors["pixel_values"]
        return pixels if image_keep is None else zero_grid_cells(pixels, image_keep.bool(), self.image_region(inputs))

    def masked_ids(self, inputs: Inputs, text_keep: torch.Tensor | None) -> torch.Tensor:
        ids = inputs.tensors["input_ids"]
        if text_keep is None:
            return ids
        if text_keep.shape != ids.shape:
            raise ValueError(f"text_keep must match input_ids {tuple(ids.shape)}, got {tuple(text_keep.shape)}")
        return ids.masked_fill(self.text_players(inputs) & ~text_keep.bool().to(ids.device), self.mask_id)

    def mask_tokens(self, inputs: Inputs, image_keep: torch.Tensor, text_keep: torch.Tensor) -> Inputs:
        """MM-SHAP coalitions: grid cells not kept → 0 pixels; caption tokens not kept → mask id."""
        return self._with(inputs, pixel_values=self.masked_pixels(inputs, image_keep),
                          input_ids=self.masked_ids(inputs, text_keep))


class HFAdapter(TransformersAdapter):
    """Opens one transformers image–caption class with its processors; subclasses name the classes and fallbacks.

    ``loaded_cls`` wraps the model; ``text_config`` names the config part the tokenizer serves (its pad id and
    length); ``fallback_image_processor`` / ``fallback_tokenizer`` stand in where the checkpoint has no files.
    """

    loaded_cls: type[ImageTextModel] = ImageTextModel

    def text_config(self, config):
        return config.text_config

    def fallback_image_processor(self, config):
        raise NotImplementedError

    def fallback_tokenizer(self, config):
        text = self.text_config(config)
        return bert_fallback_tokenizer(text.pad_token_id, text.max_position_embeddings)

    def load(self, spec: ModelSpec) -> ImageTextModel:
        model, random_init, revision = self.open(spec)
        config = model.config
        image_processor, tokenizer = checkpoint_processors(
            spec, lambda: self.fallback_image_processor(config), lambda: self.fallback_tokenizer(config))
        return self.loaded_cls(spec, model, image_processor, tokenizer, revision, random_init, self.device,
                               self.text_config(config).max_position_embeddings)
