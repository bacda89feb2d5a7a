"""The mission's dataset, whatever its kind, as one ``LoadedDataset``."""
from __future__ import annotations

import json
from functools import lru_cache

import pandas as pd

from tasks.data.coco import load_coco
from tasks.data.folder import load_folder
from tasks.data.loading import SKIPPED_COLUMNS, LoadedDataset
from tasks.data.synthetic import dataset_hash, make_synthetic
from tasks.mission import Dataset


def load_dataset(ds: Dataset) -> LoadedDataset:
    """Load once per process: the cache key, the diagnostics and the stage all ask for it."""
    return _load(ds.model_dump_json())


@lru_cache(maxsize=4)
def _load(ds_json: str) -> LoadedDataset:
    ds = Dataset.model_validate(json.loads(ds_json))
    if ds.kind == "coco":
        return load_coco(ds.annotations, ds.images, ds.samples, ds.seed, instances=ds.instances, max_words=ds.max_words)
    if ds.kind == "folder":
        return load_folder(ds.root, ds.captions, ds.samples, ds.seed, max_words=ds.max_words)
    samples = make_synthetic(ds.samples, ds.seed)
    return LoadedDataset(samples, pd.DataFrame(columns=SKIPPED_COLUMNS), dataset_hash(samples), "synthetic", "")
