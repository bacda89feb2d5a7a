"""Run a function over batches, halving the batch on out-of-memory and retrying a transient I/O error once.

Prefect's task retries re-run a whole model's diagnostics at the same batch
size, which fails the same way on a device that is a little too small; here
the failing chunk is retried at half the size (down to ``min_batch``) and the
smaller size is kept for the rest, so the work finishes and the cycle
summary can say what was retried and why.
"""
from __future__ import annotations

import errno
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

TRANSIENT_ERRNOS = (errno.EIO, errno.EAGAIN)
_OOM_TEXT = re.compile(r"out of memory|(can't|cannot|unable to|failed to) allocate", re.IGNORECASE)


@dataclass(frozen=True)
class BatchEvent:
    """One retry: of the chunk starting at item ``start``, why, and the batch size before and after."""

    start: int
    kind: str            # "out_of_memory" | "transient_io"
    reason: str          # the exception, as ``Type: message`` (first line)
    batch_before: int
    batch_after: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"items from {self.start}: {self.kind} ({self.reason}); batch {self.batch_before} → {self.batch_after}"


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA/MPS), any MemoryError, or a RuntimeError saying it could not allocate."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):  # MemoryError means OOM whatever its text (often empty)
        return True
    return isinstance(exc, RuntimeError) and bool(_OOM_TEXT.search(str(exc)))


def is_transient_io(exc: BaseException) -> bool:
    """An I/O error worth one more try (a flaky network disk); ENOSPC, EACCES, ENOENT are not."""
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def run_batched(fn: Callable[[Sequence[T]], R], items: Sequence[T], batch_size: int,
                min_batch: int = 1) -> tuple[list[R], list[BatchEvent]]:
    """``fn(chunk)`` over consecutive chunks of ``items``; returns the per-chunk results in input order and the retries.

    On out-of-memory the chunk is retried at half the batch size (kept for
    the chunks after it); at ``min_batch`` the error is re-raised with a note.
    A transient OSError (EIO, EAGAIN) retries the chunk once at the same size.
    """
    if batch_size < 1 or not 1 <= min_batch <= batch_size:
        raise ValueError(f"run_batched: need 1 <= min_batch ({min_batch}) <= batch_size ({batch_size})")
    results: list[R] = []
    events: list[BatchEvent] = []
    size, start, io_retried = batch_size, 0, False
    while start < len(items):
        chunk = items[start:start + size]
        try:
            results.append(fn(chunk))
        except Exception as exc:  # noqa: BLE001 - classified below; anything else propagates unchanged
            if is_out_of_memory(exc):
                if size <= min_batch:
                    exc.add_note(f"out of memory at the minimum batch size {min_batch} (items from {start}): "
                                 "use a device with more memory or smaller inputs")
                    raise
                smaller = max(min_batch, size // 2)
                events.append(BatchEvent(start, "out_of_memory", _reason(exc), size, smaller))
                _release_cached_memory()
                size = smaller
                continue
            if is_transient_io(exc) and not io_retried:
                events.append(BatchEvent(start, "transient_io", _reason(exc), size, size))
                io_retried = True
                continue
            raise
        start += len(chunk)
        io_retried = False
    return results, events


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _release_cached_memory() -> None:
    """Hand the allocator's cached blocks back before the smaller retry (no-op without CUDA)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
