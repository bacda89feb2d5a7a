"""Synthetic shapes: a deterministic image–caption set that needs no download.

Each image shows one coloured shape in one region; its caption names the
shape, colour and region ("a red circle on the left"). About half of the
pairs mismatch: their caption describes another (shape, colour, position)
triple. The calibration zoo trains on it, and the embedded default cycle
measures on it, so it must be byte-identical for a given (n, seed).
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

# The caption words and their tokenizer live in tasks.data.vocabulary, so adapters can read them without this module.
from tasks.data.vocabulary import (  # noqa: F401 (re-exported: the data's words are part of this module's API)
    CLS_ID,
    COLOURS,
    MASK_ID,
    PAD_ID,
    POSITIONS,
    SHAPES,
    SPECIAL_TOKENS,
    UNK_ID,
    VOCAB,
    tokenize,
)

_RGB = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
_BACKGROUND = (24, 24, 24)
# Shape centres on a 32-pixel canvas; scaled for other sizes.
_CENTRES = {"left": (9, 16), "right": (23, 16), "top": (16, 9), "bottom": (16, 23)}


@dataclass(frozen=True)
class Sample:
    sample_id: str
    image: Image.Image
    caption: str
    attributes: dict           # what the image shows: shape, colour, position
    matches: bool              # does the caption describe the image?
    caption_attributes: dict = field(default_factory=dict)  # what the caption says
    box: tuple[float, float, float, float] | None = None   # the shape's exact box, fractions of the side


def caption_for(shape: str, colour: str, position: str) -> str:
    return f"a {colour} {shape} on the {position}"


def make_synthetic(n: int, seed: int = 0, image_size: int = 32) -> list[Sample]:
    """``n`` samples, identical bytes for identical (n, seed, image_size)."""
    rng = random.Random(seed)
    return [_make_sample(rng, f"syn-{seed}-{i:05d}", image_size) for i in range(n)]


def _make_sample(rng: random.Random, sample_id: str, image_size: int) -> Sample:
    shown = {"shape": rng.choice(SHAPES), "colour": rng.choice(COLOURS), "position": rng.choice(POSITIONS)}
    matches = rng.random() < 0.5
    said = dict(shown) if matches else _other_triple(rng, shown)
    jitter, radius = (rng.randint(-2, 2), rng.randint(-2, 2)), rng.randint(4, 6)
    image = _draw(shown, image_size, jitter=jitter, radius=radius)
    caption = caption_for(said["shape"], said["colour"], said["position"])
    scale = image_size / 32
    cx, cy = ((c + j) * scale for c, j in zip(_CENTRES[shown["position"]], jitter))
    return Sample(sample_id, image, caption, shown, matches, said, box=shape_box(image_size, cx, cy, radius * scale))


def _other_triple(rng: random.Random, shown: dict) -> dict:
    # A caption of another image: any triple but the shown one, so each
    # attribute alone still matches by chance (the balanced task needs both).
    while True:
        said = {"shape": rng.choice(SHAPES), "colour": rng.choice(COLOURS), "position": rng.choice(POSITIONS)}
        if said != shown:
            return said


def _draw(attrs: dict, size: int, jitter: tuple[int, int], radius: int) -> Image.Image:
    scale = size / 32
    cx, cy = ((c + j) * scale for c, j in zip(_CENTRES[attrs["position"]], jitter))
    return draw_shape(size, attrs["shape"], attrs["colour"], cx, cy, radius * scale)


def shape_box(size: int, cx: float, cy: float, r: float) -> tuple[float, float, float, float]:
    """The exact box (x0, y0, x1, y1) of a shape drawn by ``draw_shape``, as fractions of the image side.

    Every shape here spans centre ± r on both axes (the circle's, square's and cross's
    extent, the triangle's apex and base), clipped to the canvas.
    """
    return tuple(min(max(v / size, 0.0), 1.0) for v in (cx - r, cy - r, cx + r, cy + r))


def draw_shape(size: int, shape: str | None, colour: str | None, cx: float, cy: float, r: float) -> Image.Image:
    """One shape centred at (cx, cy) with half-extent r pixels on the background; none when shape is None."""
    image = Image.new("RGB", (size, size), _BACKGROUND)
    if shape is None:
        return image
    draw = ImageDraw.Draw(image)
    fill = _RGB[colour]
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:  # cross
        w = max(r / 3, 1)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    return image


def dataset_hash(samples: list[Sample]) -> str:
    """sha256 over every image's bytes and caption, in order (a cache key)."""
    return pixels_hash((f"{s.image.size[0]}x{s.image.size[1]}\0".encode(), s.image, s.caption.encode("utf-8") + b"\0")
                       for s in samples)


def pixels_hash(framed: Iterable[tuple[bytes, Image.Image, bytes]]) -> str:
    """sha256 over each (bytes before, the image's RGB pixels, bytes after), in order: a data set's content hash."""
    h = hashlib.sha256()
    for before, image, after in framed:
        h.update(before)
        h.update(image.convert("RGB").tobytes())
        h.update(after)
    return h.hexdigest()
