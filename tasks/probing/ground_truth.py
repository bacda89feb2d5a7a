"""Ground truth for the probes: one image, its object's exact box, whether an object is there, where it is.

- ``screening_set``: synthetic shapes whose centre is drawn uniformly over the
  canvas, independently of shape, colour and size (Phase-1 screening: position
  is the only thing a box probe can use), plus a share of empty images for the
  presence target. Boxes are exact (``synthetic.shape_box``).
- ``coco_boxes``: a COCO instances file and its images; each image's target is
  its largest annotated object (real boxes), and images without instances are
  the empty ones.

Boxes are (x0, y0, x1, y1) as fractions of the image side; the position class
is the 3 × 3 cell of the box centre (row-major, 0..8), -1 without an object.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.data.loading import DatasetError, decode_image, ensure_exists
from tasks.data.synthetic import COLOURS, SHAPES, draw_shape, pixels_hash, shape_box

POSITION_CELLS = 3
# The prompt's caption when none names the object: words every tokenizer has, the random-init ones too
# (their vocabulary is the prompt's words plus the synthetic captions'); it never names a position.
EMPTY_CAPTION = "the image"


@dataclass(frozen=True)
class SpatialSample:
    sample_id: str
    image: Image.Image
    caption: str                   # what generative models are prompted with (names no position)
    box: tuple[float, float, float, float] | None

    @property
    def present(self) -> bool:
        return self.box is not None

    @property
    def position(self) -> int:
        return position_class(self.box)


@dataclass(frozen=True)
class SpatialSet:
    samples: list[SpatialSample]
    content_hash: str
    kind: str

    def boxes(self) -> np.ndarray:
        """[n, 4] boxes, NaN rows for empty images."""
        return np.array([s.box if s.box else (np.nan,) * 4 for s in self.samples], dtype=np.float64)

    def presence(self) -> np.ndarray:
        return np.array([s.present for s in self.samples], dtype=np.int64)

    def positions(self) -> np.ndarray:
        return np.array([s.position for s in self.samples], dtype=np.int64)


def position_class(box: tuple[float, float, float, float] | None, cells: int = POSITION_CELLS) -> int:
    if box is None:
        return -1
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    col, row = (min(int(c * cells), cells - 1) for c in (cx, cy))
    return row * cells + col


def screening_set(n: int, seed: int = 0, image_size: int = 32, empty_fraction: float = 0.2) -> SpatialSet:
    """``n`` images, identical bytes for identical arguments; the centre is uniform where the shape fits."""
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        sid = f"scr-{seed}-{i:05d}"
        if rng.random() < empty_fraction:
            samples.append(SpatialSample(sid, draw_shape(image_size, None, None, 0, 0, 0), EMPTY_CAPTION, None))
            continue
        shape, colour = rng.choice(SHAPES), rng.choice(COLOURS)
        r = rng.uniform(0.12, 0.22) * image_size
        cx, cy = rng.uniform(r, image_size - r), rng.uniform(r, image_size - r)
        samples.append(SpatialSample(sid, draw_shape(image_size, shape, colour, cx, cy, r), f"a {colour} {shape}",
                                     shape_box(image_size, cx, cy, r)))
    return SpatialSet(samples, _hash(samples), "synthetic")


def coco_boxes(instances: str | Path, images: str | Path, n: int, seed: int = 0, min_area: float = 0.01) -> SpatialSet:
    """``n`` images of a COCO split drawn with ``seed``; the largest instance of at least ``min_area`` of the image
    is each image's object. Unreadable images are skipped; DatasetError when fewer than ``n`` remain."""
    instances = ensure_exists(Path(instances), "COCO instances file", "pass annotations/instances_<split>.json")
    folder = ensure_exists(Path(images), "COCO image folder", "pass the folder its file_name entries are in",
                           want_dir=True)
    try:
        data = json.loads(instances.read_text(encoding="utf-8"))
        rows = {im["id"]: im for im in data["images"]}
        largest: dict[int, dict] = {}
        for ann in data["annotations"]:
            if ann.get("iscrowd"):
                continue
            best = largest.get(ann["image_id"])
            if best is None or ann["area"] > best["area"]:
                largest[ann["image_id"]] = ann
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{instances}: not a COCO instances file ({type(exc).__name__}: {exc}): pass "
                                      "instances_<split>.json with images (id, file_name, width, height) and "
                                      "annotations (image_id, bbox, area)") from None
    order = sorted(rows)
    random.Random(seed).shuffle(order)
    samples = []
    for image_id in order:
        if len(samples) == n:
            break
        row = rows[image_id]
        try:
            image = decode_image((folder / row["file_name"]).read_bytes(), folder / row["file_name"])
        except (OSError, ValueError):
            continue  # a missing or corrupt image is not a sample
        w, h = row.get("width") or image.width, row.get("height") or image.height
        ann = largest.get(image_id)
        box = None
        if ann is not None and ann["area"] >= min_area * w * h:
            x, y, bw, bh = ann["bbox"]
            box = (x / w, y / h, min((x + bw) / w, 1.0), min((y + bh) / h, 1.0))
        samples.append(SpatialSample(f"coco-{image_id}", image, EMPTY_CAPTION, box))
    if len(samples) < n:
        raise DatasetError(f"{instances}: only {len(samples)} readable images for {n} samples: lower data.samples")
    return SpatialSet(samples, _hash(samples), "coco")


def _hash(samples: list[SpatialSample]) -> str:
    return pixels_hash((f"{s.sample_id}\0{s.image.size}\0{s.box}\0".encode(), s.image, b"") for s in samples)


def split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test image indices: disjoint, seeded, the test share rounded."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def load_spatial(data) -> SpatialSet:
    """The mission's ``data`` section (tasks.probing.mission.ProbingData) as a SpatialSet."""
    if data.kind == "coco":
        return coco_boxes(data.instances, data.images, data.samples, data.seed)
    return screening_set(data.samples, data.seed, data.image_size, data.empty_fraction)
