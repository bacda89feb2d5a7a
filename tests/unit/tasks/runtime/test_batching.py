"""Batch halving on out-of-memory and one retry on transient I/O.

A real out-of-memory cannot be provoked safely on a shared CPU machine, so
the fault is *injected*: a small callable raises ``torch.OutOfMemoryError``
(the exception CUDA raises) above a batch size, or an OSError on its first
call. The halving, retry and ordering logic under test is the real one.
"""
from __future__ import annotations

import errno

import pytest
import torch

from tasks.runtime.batching import BatchEvent, is_out_of_memory, is_transient_io, run_batched


class OomAbove:
    """Sums each chunk; raises CUDA's OOM when a chunk is larger than ``limit`` (the injected fault)."""

    def __init__(self, limit: int):
        self.limit, self.sizes = limit, []

    def __call__(self, chunk):
        self.sizes.append(len(chunk))
        if len(chunk) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(chunk) * 64} MiB")
        return list(chunk)


def test_oom_halves_32_to_16_to_8_and_keeps_8_for_the_rest():
    fn = OomAbove(limit=8)
    results, events = run_batched(fn, list(range(40)), batch_size=32)
    assert fn.sizes == [32, 16, 8, 8, 8, 8, 8]
    assert [(e.start, e.kind, e.batch_before, e.batch_after) for e in events] == [
        (0, "out_of_memory", 32, 16), (0, "out_of_memory", 16, 8)]
    assert events[0].reason == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2048 MiB"
    assert str(events[1]) == ("items from 0: out_of_memory (OutOfMemoryError: CUDA out of memory. Tried to allocate "
                              "1024 MiB); batch 16 → 8")
    assert [x for chunk in results for x in chunk] == list(range(40))  # input order, nothing lost or repeated


def test_results_are_per_chunk_in_input_order_without_faults():
    results, events = run_batched(lambda c: sum(c), list(range(10)), batch_size=4)
    assert results == [0 + 1 + 2 + 3, 4 + 5 + 6 + 7, 8 + 9] and events == []


def test_oom_at_the_minimum_batch_re_raises_with_a_note():
    fn = OomAbove(limit=2)
    with pytest.raises(torch.OutOfMemoryError) as err:
        run_batched(fn, list(range(16)), batch_size=16, min_batch=4)
    assert fn.sizes == [16, 8, 4]
    assert "out of memory at the minimum batch size 4 (items from 0)" in "".join(err.value.__notes__)


def test_halving_stops_at_min_batch_not_below():
    fn = OomAbove(limit=5)
    results, events = run_batched(fn, list(range(12)), batch_size=12, min_batch=5)
    assert [(e.batch_before, e.batch_after) for e in events] == [(12, 6), (6, 5)]
    assert [x for c in results for x in c] == list(range(12))


def test_runtime_error_saying_out_of_memory_halves_but_other_errors_propagate():
    calls = []

    def fn(chunk):
        calls.append(len(chunk))
        if len(chunk) > 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return len(chunk)

    assert run_batched(fn, range(4), batch_size=4) == ([2, 2], [BatchEvent(0, "out_of_memory",
        "RuntimeError: [enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory", 4, 2)])
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batched(lambda c: (_ for _ in ()).throw(RuntimeError("shape mismatch")), range(4), batch_size=4)


def test_transient_io_error_retries_the_chunk_once():
    failures = {4: 1}  # the chunk starting at item 4 fails once with EIO

    def fn(chunk):
        if failures.get(chunk[0], 0):
            failures[chunk[0]] -= 1
            raise OSError(errno.EIO, "Input/output error", "/mnt/nfs/cache")
        return list(chunk)

    results, events = run_batched(fn, list(range(8)), batch_size=4)
    assert results == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert events == [BatchEvent(4, "transient_io", "OSError: [Errno 5] Input/output error: '/mnt/nfs/cache'", 4, 4)]


def test_a_transient_error_twice_on_one_chunk_re_raises():
    def fn(chunk):
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    with pytest.raises(BlockingIOError):
        run_batched(fn, range(4), batch_size=2)


def test_disk_full_is_not_retried():
    calls = []

    def fn(chunk):
        calls.append(chunk)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        run_batched(fn, range(4), batch_size=4)
    assert len(calls) == 1


def test_classification():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(ValueError("out of memory"))
    assert is_transient_io(OSError(errno.EAGAIN, "again")) and not is_transient_io(OSError(errno.ENOENT, "gone"))


@pytest.mark.parametrize("batch, minimum", [(0, 1), (4, 0), (4, 8)])
def test_bad_sizes_are_refused(batch, minimum):
    with pytest.raises(ValueError, match=r"need 1 <= min_batch"):
        run_batched(list, range(4), batch_size=batch, min_batch=minimum)
