"""Extraction to disk: pooled image-token states per point, streamed batch by batch into memory-mapped arrays.

Memory holds one batch at a time: each batch's rows are appended to
``<point>.npy`` through a plain file handle (the .npy header, written first,
already states [n, dim]), so it does not grow with the sample count
(benchmarks/probing_extraction_memory.py). Writing through a memmap would not
do: its dirty pages count as the process's resident memory until unmapped. A finished extraction is a folder
with ``manifest.json``, written last and renamed into place, so a crash leaves
no half-cache; the folder is keyed like the diagnostics cache on (model +
revision, data hash, points, pooling, code version) and a re-run reuses it.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from tasks.diagnostics.run import _trim_heap  # the one place that hands freed heap pages back
from tasks.runtime.paths import cache_dir
from tasks.probing.points import pool, states

CODE_FILES = ("points.py", "extract.py")
PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Features:
    """A finished extraction: ``load(key)`` maps one point's [n, dim] array (read-only)."""

    folder: Path
    keys: tuple[str, ...]
    n: int
    cached: bool

    def load(self, key: str) -> np.ndarray:
        return np.load(self.folder / f"{_file(key)}.npy", mmap_mode="r")


def _file(key: str) -> str:
    return key.replace(".", "_")


def code_version() -> str:
    digest = hashlib.sha256()
    for name in CODE_FILES:
        digest.update((PACKAGE / name).read_bytes())
    digest.update((PACKAGE.parent / "adapters" / "zoo" / "spatial.py").read_bytes())
    return digest.hexdigest()[:16]


def cache_key(model_id: str, revision: str, data_hash: str, keys: tuple[str, ...], how: str, length: int) -> str:
    parts = [model_id, revision, data_hash, ",".join(sorted(keys)), how, str(length), code_version()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def extract(model, adapter: str, model_id: str, samples: list, keys: tuple[str, ...], how: str = "tokens",
            length: int = 16, batch_size: int = 16, data_hash: str = "", root: Path | None = None) -> Features:
    """Pooled states of every sample at every key, from the cache when this exact extraction finished before."""
    folder = (root or cache_dir("probing")) / cache_key(model_id, model.revision, data_hash, keys, how, length)
    if (folder / "manifest.json").exists():
        return Features(folder, keys, json.loads((folder / "manifest.json").read_text())["n"], cached=True)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files, dims = {}, {}
    n = len(samples)
    try:
        for start in range(0, n, batch_size):
            chunk = samples[start:start + batch_size]
            inputs = model.prepare([s.image for s in chunk], [s.caption for s in chunk], [s.sample_id for s in chunk])
            got = states(model, adapter, inputs, set(keys))
            for key in keys:
                rows = np.ascontiguousarray(np.stack([pool(t, how, length) for t in got[key]]), dtype="<f4")
                if key not in files:
                    dims[key] = int(rows.shape[1])
                    files[key] = open(tmp / f"{_file(key)}.npy", "wb")  # noqa: SIM115 - closed below
                    npy.write_array_header_2_0(files[key], {"descr": "<f4", "fortran_order": False,
                                                            "shape": (n, dims[key])})
                files[key].write(rows.tobytes())
            del inputs, got
            _trim_heap()  # glibc's fragmentation would otherwise grow with the number of batches
    finally:
        for f in files.values():
            f.close()
    (tmp / "sample_ids.json").write_text(json.dumps([s.sample_id for s in samples]))
    (tmp / "manifest.json").write_text(json.dumps({"n": n, "keys": list(keys), "dims": dims, "pool": how,
                                                   "length": length, "model": model_id, "revision": model.revision}))
    if folder.exists():  # another process finished the same extraction first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(folder)
    return Features(folder, keys, n, cached=False)
