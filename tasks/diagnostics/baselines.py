"""The two-player modality Shapley share under several masking baselines per modality.

A modality's absence has no single right baseline, and every published tool
fixes one (MM-SHAP, CC-SHAP-VLM, Perceptual Score). Here each modality is
also removed in two other ways, the other modality keeping the adapter's
default baseline:

| column | image absent as | text absent as |
|---|---|---|
| modality_shapley_v (default, unchanged) | the adapter's mean image | the adapter's mask/pad tokens |
| shapley_v_image_blur | a Gaussian blur of the image | mask/pad tokens |
| shapley_v_image_other | another sample's image (the next in the batch) | mask/pad tokens |
| shapley_v_text_empty | mean image | an empty caption |
| shapley_v_text_other | mean image | another sample's caption (the next in the batch) |

Content baselines go through ``model.prepare`` (so every adapter supports
them without code of its own); the default ones through ``model.mask``.
"Another sample" needs a batch of at least two: a batch of one gets NaN.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageFilter

from tasks.diagnostics.shapley import modality_shapley

IMAGE_BASELINES = {"mean": "modality_shapley_v", "blur": "shapley_v_image_blur", "other": "shapley_v_image_other"}
TEXT_BASELINES = {"mask": "modality_shapley_v", "empty": "shapley_v_text_empty", "other": "shapley_v_text_other"}
COLUMNS = ("shapley_v_image_blur", "shapley_v_image_other", "shapley_v_text_empty", "shapley_v_text_other")
#: Every share a verdict is checked under: the default and the four alternatives.
ALL = ("modality_shapley_v", *COLUMNS)


def blurred(image: Image.Image) -> Image.Image:
    """A Gaussian blur with a radius of 1/8 of the image's side: shapes survive as blobs, edges and texture do not."""
    return image.filter(ImageFilter.GaussianBlur(radius=max(1.0, max(image.size) / 8)))


def _shift(items: list) -> list:
    return items[1:] + items[:1]


def baseline_shares(model, images: list[Image.Image], captions: list[str], ids: list[str],
                    v_full: torch.Tensor, v_image: torch.Tensor, v_text: torch.Tensor,
                    towers: tuple[torch.Tensor, ...] | None = None) -> dict[str, np.ndarray]:
    """The share under each alternative baseline; ``v_*`` are the default passes (image only = text masked, ...).

    ``towers``: a dual encoder's (image, text, masked image, masked text) embeddings of the batch. Its values then
    pair embeddings: the alternatives cost one image-tower pass (the blurred images) and one text-tower pass (the
    empty captions), and "another sample" none (the batch's embeddings, shifted); the same values as whole passes.
    """
    n = len(ids)
    swaps = (("image", IMAGE_BASELINES["blur"], "blur", [blurred(im) for im in images]),
             ("image", IMAGE_BASELINES["other"], "other", _shift(list(images))),
             ("text", TEXT_BASELINES["empty"], "empty", [""] * n),
             ("text", TEXT_BASELINES["other"], "other", _shift(list(captions))))
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for absent, column, key, swapped in swaps:
            if key == "other" and n < 2:
                out[column] = np.full(n, np.nan)
                continue
            if towers is not None:
                out[column] = _share_from_towers(model, absent, key, swapped, images, captions, ids, towers,
                                                 v_full, v_image, v_text)
            else:
                out[column] = _share_with(model, absent, swapped, images, captions, ids, v_full, v_image, v_text)
    return out


def _share_from_towers(model, absent: str, key: str, swapped: list, images, captions, ids, towers,
                       v_full: torch.Tensor, v_image: torch.Tensor, v_text: torch.Tensor) -> np.ndarray:
    """``_share_with`` for a dual encoder: the absent modality's embeddings replaced, the rest reused."""
    image, text, no_image, no_text = towers
    if absent == "image":
        alt = torch.roll(image, -1, 0) if key == "other" else model.encode_image(model.prepare(swapped, captions, ids))
        v_i, v_t, v_0 = v_image, model.similarity(alt, text), model.similarity(alt, no_text)
    else:
        alt = torch.roll(text, -1, 0) if key == "other" else model.encode_text(model.prepare(images, swapped, ids))
        v_i, v_t, v_0 = model.similarity(image, alt), v_text, model.similarity(no_image, alt)
    return modality_shapley(v_full, v_i.float().cpu(), v_t.float().cpu(), v_0.float().cpu())["modality_shapley_v"].numpy()


def _share_with(model, absent: str, swapped: list, images: list[Image.Image], captions: list[str], ids: list[str],
                v_full: torch.Tensor, v_image: torch.Tensor, v_text: torch.Tensor) -> np.ndarray:
    """The share with the ``absent`` modality ("image" | "text") replaced by ``swapped``, the other one at its default."""
    image_absent = absent == "image"
    replaced = model.prepare(swapped if image_absent else images, captions if image_absent else swapped, ids)
    v_other = model.score(replaced)  # the other modality alone, ``absent`` as ``swapped``
    v_0 = model.score(model.mask(replaced, image_keep=image_absent, text_keep=not image_absent))
    v_i, v_t = (v_image, v_other) if image_absent else (v_other, v_text)
    return modality_shapley(v_full, v_i, v_t, v_0)["modality_shapley_v"].numpy()
