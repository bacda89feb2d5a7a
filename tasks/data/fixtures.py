"""Small on-disk datasets with known defects, for tests and end-to-end runs without downloads.

``write_coco_fixture`` writes a COCO-shaped split (captions + instances JSON,
JPEG images, some deliberately truncated); ``write_folder_fixture`` writes a
bring-your-own folder whose captions file has one row per kind of defect.
Each returns the paths plus what a loader must find (categories, expected
skip reasons), so a test can check a loader against a known answer.
"""
from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.data.loading import (
    DEFAULT_MAX_WORDS, EMPTY_CAPTION, EMPTY_FILE, LONG_CAPTION, MISSING, TEXT_NOT_IMAGE, TRUNCATED,
)
from tasks.data.synthetic import COLOURS, POSITIONS, SHAPES, _draw, caption_for

MAX_CATEGORIES = len(SHAPES) * len(COLOURS)


@dataclass(frozen=True)
class CocoFixture:
    root: Path
    captions: Path                 # annotations/captions_fixture.json
    instances: Path                # annotations/instances_fixture.json
    images: Path                   # folder of <id:012d>.jpg
    categories: dict[int, str]     # image id → category of its largest annotation
    first_captions: dict[int, str]  # image id → the caption a loader must pick
    corrupt: dict[int, Path]       # image id → truncated JPEG


@dataclass(frozen=True)
class FolderFixture:
    root: Path                     # image paths in the captions file are relative to it
    captions: Path                 # captions.csv or captions.jsonl
    good: dict[str, str]           # sample id → caption, for the rows a loader must use
    bad: dict[str, str]            # sample id → the skip reason a loader must give


def category_names(n: int) -> list[str]:
    """``n`` distinct "<colour> <shape>" names; the i-th pairs shape i mod 4 with a rotating colour."""
    if not 1 <= n <= MAX_CATEGORIES:
        raise ValueError(f"categories={n}: use 1..{MAX_CATEGORIES} (one per colour and shape)")
    return [f"{COLOURS[(i + i // len(SHAPES)) % len(COLOURS)]} {SHAPES[i % len(SHAPES)]}" for i in range(n)]


def write_coco_fixture(directory: str | Path, n_images: int = 12, categories: int = 4, corrupt: int = 1,
                       seed: int = 0, image_size: int = 64) -> CocoFixture:
    """A COCO split of ``n_images`` (category i mod ``categories`` for the i-th); ``corrupt`` truncated JPEGs."""
    if not 0 <= corrupt <= n_images:
        raise ValueError(f"corrupt={corrupt}: use 0..n_images ({n_images})")
    root = Path(directory)
    images_dir, ann_dir = root / "images", root / "annotations"
    images_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = category_names(categories)
    cat_ids = {name: 10 + k for k, name in enumerate(names)}  # COCO ids are not 0..K-1 either
    broken = set(rng.sample(range(n_images), corrupt))
    image_rows, caption_rows, instance_rows = [], [], []
    truth, first, corrupt_paths = {}, {}, {}
    for i in range(n_images):
        image_id = 100 + i
        name = names[i % categories]
        colour, shape = name.split(" ")
        position = rng.choice(POSITIONS)
        radius = rng.randint(4, 6)
        image = _draw({"shape": shape, "colour": colour, "position": position}, image_size,
                      jitter=(rng.randint(-2, 2), rng.randint(-2, 2)), radius=radius)
        path = images_dir / f"{image_id:012d}.jpg"
        data = _jpeg(image)
        if i in broken:
            data = data[: len(data) // 2]  # cut mid-scan: PIL reports it as truncated
            corrupt_paths[image_id] = path
        path.write_bytes(data)
        image_rows.append({"id": image_id, "file_name": path.name, "width": image_size, "height": image_size})
        captions = [caption_for(shape, colour, position), f"an image with a {colour} {shape}"]
        for text in captions:
            caption_rows.append({"id": 1000 + len(caption_rows), "image_id": image_id, "caption": text})
        first[image_id] = captions[0]
        truth[image_id] = name
        side = 2 * radius * image_size / 32
        if categories > 1 and i % 3:
            # A smaller object of another category listed first: the category
            # must come from the largest area, not from the first annotation.
            other = names[(i + 1) % categories]
            instance_rows.append(_box(image_id, cat_ids[other], side / 2, len(instance_rows) + 1))
        instance_rows.append(_box(image_id, cat_ids[name], side, len(instance_rows) + 1))
    cats = [{"id": cat_ids[n], "name": n, "supercategory": "shape"} for n in names]
    captions_path, instances_path = ann_dir / "captions_fixture.json", ann_dir / "instances_fixture.json"
    info = {"description": "fusionaudit COCO-shaped fixture", "version": "1"}
    captions_path.write_text(json.dumps({"info": info, "images": image_rows, "annotations": caption_rows}))
    instances_path.write_text(json.dumps(
        {"info": info, "images": image_rows, "annotations": instance_rows, "categories": cats}))
    return CocoFixture(root, captions_path, instances_path, images_dir, truth, first, corrupt_paths)


def _box(image_id: int, category_id: int, side: float, ann_id: int) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
            "bbox": [0.0, 0.0, side, side], "area": side * side, "segmentation": []}


def _jpeg(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def write_folder_fixture(directory: str | Path, n_good: int = 8, seed: int = 0, fmt: str = "csv",
                         max_words: int = DEFAULT_MAX_WORDS, image_size: int = 48) -> FolderFixture:
    """``n_good`` usable rows plus one row per defect: empty, blank and over-long captions,
    zero-byte, missing, truncated and text-instead-of-image files."""
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"fmt={fmt!r}: use 'csv' or 'jsonl'")
    root = Path(directory)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    good: dict[str, str] = {}

    def shape_image(name: str) -> tuple[bytes, str]:
        attrs = {"shape": rng.choice(SHAPES), "colour": rng.choice(COLOURS), "position": rng.choice(POSITIONS)}
        image = _draw(attrs, image_size, jitter=(0, 0), radius=5)
        buf = io.BytesIO()
        image.save(buf, "PNG" if name.endswith(".png") else "JPEG", quality=95)
        return buf.getvalue(), caption_for(attrs["shape"], attrs["colour"], attrs["position"])

    for k in range(n_good):
        name = f"img/good_{k:02d}.{'png' if k % 2 else 'jpg'}"
        data, caption = shape_image(name)
        (root / name).write_bytes(data)
        rows.append((name, caption))
        good[name] = caption
    long_caption = " ".join(["word"] * (max_words + 6))
    ok_image, ok_caption = shape_image("x.png")
    jpeg, _ = shape_image("x.jpg")
    files = {
        "img/empty_caption.png": ok_image,
        "img/blank_caption.png": ok_image,
        "img/long_caption.png": ok_image,
        "img/zero_byte.jpg": b"",
        "img/truncated.jpg": jpeg[: len(jpeg) // 2],
        "img/text.jpg": b"this is a caption someone saved with an image extension\n",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    bad = {
        "img/empty_caption.png": ("", EMPTY_CAPTION),
        "img/blank_caption.png": ("  \t ", EMPTY_CAPTION),
        "img/long_caption.png": (long_caption, LONG_CAPTION.format(words=max_words + 6, max_words=max_words)),
        "img/zero_byte.jpg": (ok_caption, EMPTY_FILE),
        "img/missing.jpg": (ok_caption, MISSING),  # named in the captions file, never written
        "img/truncated.jpg": (ok_caption, TRUNCATED),
        "img/text.jpg": (ok_caption, TEXT_NOT_IMAGE),
    }
    rows += [(name, caption) for name, (caption, _) in bad.items()]
    order = list(range(len(rows)))
    rng.shuffle(order)  # defects spread through the file, as in real data
    rows = [rows[i] for i in order]
    if fmt == "csv":
        captions = root / "captions.csv"
        pd.DataFrame(rows, columns=["image", "caption"]).to_csv(captions, index=False, encoding="utf-8")
    else:
        captions = root / "captions.jsonl"
        captions.write_text("".join(json.dumps({"image": i, "caption": c}) + "\n" for i, c in rows), encoding="utf-8")
    return FolderFixture(root, captions, good, {name: reason for name, (_, reason) in bad.items()})
