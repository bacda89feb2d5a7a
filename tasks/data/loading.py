"""What every image–caption loader shares: decoding, caption checks, skip lists, the content hash.

A real dataset has bad files. A loader never crashes on one and never drops
one silently: each bad sample becomes a row of ``LoadedDataset.skipped``
(source, sample_id, reason) and the run goes on with the rest. Only a
dataset that cannot be used at all (missing annotations or folder, nothing
usable left) raises ``DatasetError``, whose message names the path and the fix.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from tasks.data.synthetic import Sample

DEFAULT_MAX_WORDS = 64
SKIPPED_COLUMNS = ["source", "sample_id", "reason"]

# Skip reasons, exact: tests and reports match on them.
MISSING = "missing image file"
NO_IMAGE_PATH = "no image path"
NOT_A_FILE = "image path is not a file"
UNREADABLE = "image file cannot be read ({detail})"
NOT_REGULAR = "not a regular file (a pipe, socket or device): only image files are read"
OUTSIDE_ROOT = ("outside the dataset folder: keep image paths relative to it, or list the other folder in "
                "FUSIONAUDIT_DATA_ROOTS")
DATA_ROOTS_ENV = "FUSIONAUDIT_DATA_ROOTS"  # extra folders (os.pathsep-separated) image paths may resolve into
EMPTY_FILE = "empty image file (0 bytes)"
TEXT_NOT_IMAGE = "not an image: the file holds text"
UNKNOWN_FORMAT = "not an image: unrecognised file format"
TRUNCATED = "truncated image: the file ends before the image data does"
CORRUPT = "corrupt image data ({detail})"
TOO_LARGE = "image too large to decode safely ({detail})"
EMPTY_CAPTION = "empty caption"
CAPTION_NOT_TEXT = "caption is not text ({type})"
LONG_CAPTION = "over-long caption ({words} words > {max_words})"


class DatasetError(ValueError):
    """The dataset cannot be used; the message names the path, the problem and the fix."""


class BadSample(ValueError):
    """One sample that cannot be used; ``reason`` is the short text of the skip list."""

    def __init__(self, source: str | Path, reason: str):
        self.source, self.reason = str(source), reason
        super().__init__(f"{source}: {reason}")


@dataclass(frozen=True, eq=False)  # eq=False: comparing DataFrames with == is ambiguous; compare content_hash
class LoadedDataset:
    """Usable samples plus the list of skipped ones and a hash of what was used."""

    samples: list[Sample]
    skipped: pd.DataFrame          # columns source, sample_id, reason; one row per skipped sample
    content_hash: str              # sha256 over the used image bytes and captions (a cache key)
    kind: str                      # "coco", "folder"
    root: str                      # where the images live

    def __len__(self) -> int:
        return len(self.samples)

    def skip_counts(self) -> dict[str, int]:
        """Reason → number of skipped samples, most frequent first."""
        return self.skipped["reason"].value_counts().to_dict()


# --- images ------------------------------------------------------------------

def read_image(path: str | Path) -> tuple[Image.Image, bytes]:
    """(RGB image, the file's bytes); raises BadSample naming what is wrong with the file."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir() and not stat.S_ISREG(path.stat().st_mode):
            raise BadSample(path, NOT_REGULAR)  # reading a FIFO would block forever
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadSample(path, MISSING) from None
    except IsADirectoryError:
        raise BadSample(path, NOT_A_FILE) from None
    except OSError as e:
        raise BadSample(path, UNREADABLE.format(detail=e.strerror or e)) from None
    return decode_image(data, path), data


def check_inside(path: Path, root: Path) -> None:
    """BadSample unless ``path`` (links followed) lies in ``root`` or a folder of ``$FUSIONAUDIT_DATA_ROOTS``."""
    extra = [Path(p) for p in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    resolved = Path(path).resolve()
    if not any(resolved.is_relative_to(r.resolve()) for r in [Path(root), *extra]):
        raise BadSample(path, OUTSIDE_ROOT)


def open_image(path: str | Path) -> Image.Image:
    """The image at ``path`` as RGB, fully decoded (``.load()``), or BadSample with the reason."""
    return read_image(path)[0]


def decode_image(data: bytes, source: str | Path = "<bytes>") -> Image.Image:
    if not data:
        raise BadSample(source, EMPTY_FILE)
    try:
        with Image.open(io.BytesIO(data)) as image:
            # .load() decodes every pixel now: a truncated or corrupt file fails
            # here, at load time, not later inside a model's batch.
            image.load()
            return image.convert("RGB")
    except Image.DecompressionBombError as e:
        raise BadSample(source, TOO_LARGE.format(detail=e)) from None
    except UnidentifiedImageError:
        raise BadSample(source, TEXT_NOT_IMAGE if _looks_like_text(data) else UNKNOWN_FORMAT) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # PIL reports short files as OSError("image file is truncated ...") or
        # "Truncated File Read", or, cut inside the header, "cannot load this
        # image"; a missing end marker tells those apart from damaged data.
        if "truncated" in str(e).lower() or _lacks_end_marker(data):
            raise BadSample(source, TRUNCATED) from None
        raise BadSample(source, CORRUPT.format(detail=e)) from None


def _lacks_end_marker(data: bytes) -> bool:
    """A JPEG without its EOI marker or a PNG without its IEND chunk: the file was cut short."""
    if data.startswith(b"\xff\xd8"):
        return not data.rstrip(b"\0").endswith(b"\xff\xd9")
    if data.startswith(b"\x89PNG"):
        return b"IEND" not in data[-12:]
    return False


def _looks_like_text(data: bytes) -> bool:
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c.isspace() for c in text)


# --- captions ----------------------------------------------------------------

def check_caption(text: object, max_words: int = DEFAULT_MAX_WORDS) -> str | None:
    """None for a usable caption, else the skip reason (empty / over-long: more than ``max_words`` words)."""
    if text is None:
        return EMPTY_CAPTION
    if not isinstance(text, str):
        return CAPTION_NOT_TEXT.format(type=type(text).__name__)
    if not text.strip():
        return EMPTY_CAPTION
    words = len(text.split())
    if words > max_words:
        return LONG_CAPTION.format(words=words, max_words=max_words)
    return None


# --- building a dataset ------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """A sample named by an annotation file, before its files are opened."""

    sample_id: str
    image_path: Path
    caption: object                # may be empty / not a string: checked before use
    caption_source: str            # where to fix the caption ("captions.csv row 4")
    attributes: dict


@dataclass
class Collector:
    """Accumulates used and skipped samples while a loader walks its candidates."""

    root: Path
    max_words: int = DEFAULT_MAX_WORDS
    samples: list[Sample] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    digests: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # id → (path, sha256, caption)

    def take(self, c: Candidate) -> bool:
        """Use ``c`` if its caption and image are good; else list it as skipped. True when used."""
        reason = check_caption(c.caption, self.max_words)
        if reason is not None:
            self.skipped.append({"source": c.caption_source, "sample_id": c.sample_id, "reason": reason})
            return False
        try:
            check_inside(c.image_path, self.root)
            image, data = read_image(c.image_path)
        except BadSample as bad:
            self.skipped.append({"source": bad.source, "sample_id": c.sample_id, "reason": bad.reason})
            return False
        caption = c.caption.strip()
        self.samples.append(Sample(c.sample_id, image, caption, dict(c.attributes), matches=True))
        self.digests[c.sample_id] = (_relative(c.image_path, self.root), hashlib.sha256(data).hexdigest(), caption)
        return True

    def finish(self, kind: str, source: str | Path, fix: str) -> LoadedDataset:
        if not self.samples:
            counts = pd.Series([s["reason"] for s in self.skipped], dtype=object).value_counts().to_dict()
            detail = ", ".join(f"{n} × {r}" for r, n in counts.items()) or "it names no samples"
            raise DatasetError(f"{source}: no usable samples ({detail}): {fix}")
        return LoadedDataset(
            samples=self.samples,
            skipped=pd.DataFrame(self.skipped, columns=SKIPPED_COLUMNS),
            content_hash=content_hash(self.digests),
            kind=kind,
            root=str(self.root),
        )


def content_hash(digests: dict[str, tuple[str, str, str]]) -> str:
    """sha256 over (sample_id, image path, image sha256, caption) of each used sample, sorted by id.

    Sorting makes it independent of the sampling order; the image path is
    relative to the root, so moving the dataset keeps the hash.
    """
    h = hashlib.sha256()
    for sample_id in sorted(digests):
        h.update("\0".join((sample_id, *digests[sample_id])).encode("utf-8") + b"\0\0")
    return h.hexdigest()


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def draw(groups: dict[str, list], n: int | None, seed: int, take: Callable[[object], bool]) -> None:
    """Offer items to ``take`` until it has accepted ``n`` (all when None), evenly across ``groups``.

    Round robin over the groups in a seeded order (which decides who gets the
    remainder when n is not a multiple of the groups); each group's items are
    sorted, then shuffled with ``seed``, so the input order does not matter.
    A rejected (bad) item is replaced by the next one of the *same* group, so
    per-group counts differ by at most one while every group has good items left.
    """
    rng = np.random.default_rng(seed)
    names = sorted(groups)
    queues = {name: iter(_shuffled(groups[name], rng)) for name in names}
    order = [names[i] for i in rng.permutation(len(names))]
    wanted = sum(len(v) for v in groups.values()) if n is None else n
    taken = 0
    while order and taken < wanted:
        for name in list(order):
            if taken >= wanted:
                return
            if any(take(item) for item in queues[name]):  # stops at the group's first good item
                taken += 1
            else:
                order.remove(name)  # no good items left in this group


def _shuffled(items: list, rng: np.random.Generator) -> list:
    items = sorted(items)
    return [items[i] for i in rng.permutation(len(items))]


def ensure_exists(path: Path, what: str, fix: str, want_dir: bool = False) -> Path:
    """``path`` if it exists (as a folder when ``want_dir``), else DatasetError naming it and the fix."""
    ok = path.is_dir() if want_dir else path.is_file()
    if not ok:
        problem = "not found" if not path.exists() else ("not a folder" if want_dir else "not a file")
        raise DatasetError(f"{path}: {what} {problem}: {fix}")
    return path


def read_text(path: Path) -> str:
    """A text file's content as UTF-8 (a BOM is allowed); DatasetError naming the bad byte otherwise."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bad = data[e.start]
        raise DatasetError(
            f"{path}: not UTF-8 text (byte 0x{bad:02x} at offset {e.start}): save the file as UTF-8 "
            "(in a spreadsheet: 'CSV UTF-8'; or: iconv -f <its encoding> -t utf-8)"
        ) from None


def unique_ids(names: Iterable[str]) -> list[str]:
    """The names, with ``#2``, ``#3``… appended to repeats (one image captioned on several rows)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out
