"""COCO captions: one caption per image, drawn with a seed, stratified by category when asked.

Only the JSON annotation files are read (no pycocotools): a captions file
(``captions_*.json``: ``images`` with id/file_name, ``annotations`` with
image_id/caption) and optionally an instances file (``instances_*.json``:
``annotations`` with image_id/category_id/area, ``categories`` with id/name).

Each image's caption is its first one in the file. With an instances file,
each image's category is that of its largest-area annotation, and the n
samples are spread as evenly as possible over the categories present (the
source documents' stratified sampling); images without any instance
annotation have no category and are not drawn then. Without it, images are
drawn uniformly. Both are seeded and deterministic.
"""
from __future__ import annotations

import json
from pathlib import Path

from tasks.data.loading import (
    DEFAULT_MAX_WORDS, Candidate, Collector, DatasetError, LoadedDataset, draw, ensure_exists, read_text,
)

_CAPTIONS_HINT = ("a COCO captions file holds 'images' (id, file_name) and 'annotations' (image_id, caption): "
                  "pass annotations/captions_<split>.json")
_INSTANCES_HINT = ("a COCO instances file holds 'annotations' (image_id, category_id, area) and "
                   "'categories' (id, name): pass annotations/instances_<split>.json")


def load_coco(
    annotations: str | Path,
    images: str | Path,
    samples: int,
    seed: int = 0,
    instances: str | Path | None = None,
    max_words: int = DEFAULT_MAX_WORDS,
) -> LoadedDataset:
    """``samples`` usable image–caption pairs from a COCO split; bad ones are skipped and listed."""
    if samples < 1:
        raise ValueError(f"samples={samples}: ask for at least one sample")
    annotations = ensure_exists(Path(annotations), "COCO captions file",
                                "pass the captions JSON, e.g. annotations/captions_val2017.json "
                                "from the COCO 2017 train/val annotations download")
    images = ensure_exists(Path(images), "COCO image folder",
                           f"pass the folder that holds the images {annotations.name} names (e.g. val2017/)",
                           want_dir=True)
    files, captions = _read_captions(annotations)
    if instances is not None:
        instances = ensure_exists(Path(instances), "COCO instances file",
                                  "pass annotations/instances_<split>.json of the same split, or leave it out "
                                  "for unstratified sampling")
        category = image_categories(instances)
        groups: dict[str, list[int]] = {}
        for image_id in captions:
            if image_id in category:
                groups.setdefault(category[image_id], []).append(image_id)
    else:
        category = {}
        groups = {"all": list(captions)}

    collector = Collector(images, max_words)

    def take(image_id: int) -> bool:
        ann_id, caption = captions[image_id]
        attributes = {"image_id": image_id, "file_name": files[image_id]}
        if image_id in category:
            attributes["category"] = category[image_id]
        return collector.take(Candidate(
            sample_id=f"coco-{image_id}",
            image_path=images / files[image_id],
            caption=caption,
            caption_source=f"{annotations} (annotation id {ann_id})",
            attributes=attributes,
        ))

    draw(groups, samples, seed, take)
    fix = (f"check that {images} holds the images {annotations.name} names, "
           "or fix the captions listed as skipped")
    return collector.finish("coco", annotations, fix)


def image_categories(instances: Path) -> dict[int, str]:
    """image id → name of the category of its largest-area annotation (first one on ties)."""
    data = _read_json(instances)
    names = {c["id"]: c["name"] for c in _records(data, "categories", ("id", "name"), instances, _INSTANCES_HINT)}
    best: dict[int, tuple[float, int]] = {}
    anns = _records(data, "annotations", ("image_id", "category_id", "area"), instances, _INSTANCES_HINT)
    for i, ann in enumerate(anns):
        if ann["category_id"] not in names:
            raise DatasetError(f"{instances}: annotations[{i}] names category_id {ann['category_id']!r}, "
                               f"which 'categories' does not list: use the file as downloaded from COCO")
        image_id, area = ann["image_id"], float(ann["area"])
        if image_id not in best or area > best[image_id][0]:
            best[image_id] = (area, ann["category_id"])
    return {image_id: names[cat] for image_id, (_, cat) in best.items()}


def _read_captions(path: Path) -> tuple[dict[int, str], dict[int, tuple[object, object]]]:
    """(image id → file name, image id → (annotation id, first caption)) for images with a caption."""
    data = _read_json(path)
    files = {im["id"]: im["file_name"] for im in _records(data, "images", ("id", "file_name"), path, _CAPTIONS_HINT)}
    captions: dict[int, tuple[object, object]] = {}
    for i, ann in enumerate(_records(data, "annotations", ("image_id", "caption"), path, _CAPTIONS_HINT)):
        if ann["image_id"] not in files:
            raise DatasetError(f"{path}: annotations[{i}] captions image_id {ann['image_id']!r}, which 'images' "
                               "does not list: use the file as downloaded from COCO")
        captions.setdefault(ann["image_id"], (ann.get("id", i), ann["caption"]))
    return files, captions


def _read_json(path: Path) -> object:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): "
                           "re-download the annotations or fix the file") from None


def _records(data: object, key: str, fields: tuple[str, ...], path: Path, hint: str) -> list[dict]:
    """``data[key]``, a list of objects each holding ``fields``; DatasetError naming the file and key otherwise."""
    if not isinstance(data, dict) or key not in data:
        raise DatasetError(f"{path}: missing key {key!r}: {hint}")
    items = data[key]
    if not isinstance(items, list):
        raise DatasetError(f"{path}: {key!r} is a {type(items).__name__}, not a list: {hint}")
    for i, item in enumerate(items):
        missing = [f for f in fields if not isinstance(item, dict) or f not in item]
        if missing:
            raise DatasetError(f"{path}: {key}[{i}] has no key {missing[0]!r}: {hint}")
    return items
