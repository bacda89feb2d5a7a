"""Bring-your-own image–caption sets: a folder of images plus a CSV or JSONL captions file.

    captions.csv                 captions.jsonl
    image,caption                {"image": "img/001.jpg", "caption": "a dog on a sofa"}
    img/001.jpg,a dog on a sofa

Image paths are relative to the folder. One row is one sample; an image
captioned on several rows gives several samples (ids ``img/001.jpg``,
``img/001.jpg#2``). Bad rows are skipped and listed, never fatal.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd

from tasks.data.loading import (
    DEFAULT_MAX_WORDS, NO_IMAGE_PATH, Candidate, Collector, DatasetError, LoadedDataset, draw, ensure_exists,
    read_text, unique_ids,
)

COLUMNS = ("image", "caption")
_FORMAT_HINT = "a captions file is a CSV with a header row image,caption or a JSONL file with keys image, caption"


def load_folder(
    root: str | Path,
    captions: str | Path,
    samples: int | None = None,
    seed: int = 0,
    max_words: int = DEFAULT_MAX_WORDS,
) -> LoadedDataset:
    """``samples`` usable pairs drawn with ``seed`` (all rows when None); bad rows are skipped and listed."""
    if samples is not None and samples < 1:
        raise ValueError(f"samples={samples}: ask for at least one sample, or None for all rows")
    root = ensure_exists(Path(root), "image folder",
                         "pass the folder that the captions file's image paths are relative to", want_dir=True)
    captions = ensure_exists(Path(captions), "captions file", f"pass an existing file; {_FORMAT_HINT}")
    table = read_captions(captions)
    ids = unique_ids(table["image"].tolist())
    collector = Collector(root, max_words)

    def take(row: int) -> bool:
        image, caption, where = table.at[row, "image"], table.at[row, "caption"], table.at[row, "where"]
        if not image.strip():
            collector.skipped.append({"source": where, "sample_id": ids[row], "reason": NO_IMAGE_PATH})
            return False
        return collector.take(Candidate(
            sample_id=ids[row],
            image_path=root / image.strip(),
            caption=caption,
            caption_source=where,
            attributes={"image": image.strip(), "row": row + 1},
        ))

    draw({"all": list(range(len(table)))}, samples, seed, take)
    return collector.finish("folder", captions, f"fix the files listed as skipped, or check that {root} "
                                                "is the folder the image paths are relative to")


def read_captions(path: Path) -> pd.DataFrame:
    """Columns image, caption (strings, empty where blank) and where (file and row, for skip lists)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = _read_csv(path)
        where = [f"{path} row {i + 1}" for i in range(len(table))]
    elif suffix in (".jsonl", ".ndjson"):
        table, lines = _read_jsonl(path)
        where = [f"{path} line {n}" for n in lines]
    else:
        raise DatasetError(f"{path}: unknown captions format {path.suffix or '(no suffix)'!r}: {_FORMAT_HINT}")
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        found = ", ".join(map(str, table.columns)) or "none"
        raise DatasetError(f"{path}: missing column {missing[0]!r} (found: {found}): {_FORMAT_HINT}")
    # Plain Python objects, None where blank: pandas would turn a JSON null into NaN.
    images = ["" if _blank(v) else str(v) for v in table["image"]]
    texts = [None if _blank(v) else v for v in table["caption"]]
    return pd.DataFrame({"image": images, "caption": pd.Series(texts, dtype=object), "where": where})


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _read_csv(path: Path) -> pd.DataFrame:
    text = read_text(path)
    try:
        # Everything as text and blanks as "" (not NaN), so an empty caption is seen as empty.
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: empty file: {_FORMAT_HINT}") from None
    except pd.errors.ParserError as e:
        raise DatasetError(f"{path}: not a valid CSV ({e}): quote captions that hold commas") from None
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, list[int]]:
    rows, lines = [], []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(
                f"{path}: line {n} is not valid JSON ({e.msg}): {_FORMAT_HINT}, one object per line") from None
        if not isinstance(record, dict):
            raise DatasetError(f"{path}: line {n} is a JSON {type(record).__name__}, not an object: {_FORMAT_HINT}")
        absent = [c for c in COLUMNS if c not in record]
        if absent:
            raise DatasetError(f"{path}: line {n} has no key {absent[0]!r}: {_FORMAT_HINT}")
        rows.append(record)
        lines.append(n)
    if not rows:
        raise DatasetError(f"{path}: empty file: {_FORMAT_HINT}")
    return pd.DataFrame(rows), lines
