"""A model worker's process settings, set once at its start: torch's threads, how soon the model's
thread gets the GIL back, and glibc's malloc.

- **The GIL's switch interval** (`VLMQ_GIL_SWITCH_MS`). A torch kernel releases the GIL; the thread
  preparing the next batch or finishing the last one takes it, and `generate` then waits up to the
  interval to go on: with Python's 5 ms a tiny model ran 14% slower under load.
- **malloc** (`VLMQ_WORKER_MALLOC_REUSE`, glibc only). glibc serves a buffer over its dynamic mmap
  threshold with a fresh `mmap` and returns it with `munmap` when freed, and each thread allocates from
  an arena of its own whose heaps shrink the same way: every forward pass faulted its activations in
  again. A full-size BLIP-base batch of 8 took 1.5 million page faults and 2.5 s of system time in
  7.4 s. With one arena and buffers up to 32 MiB kept for reuse: ~0.1 million, 0.3-0.5 s, 6.5 s
  (benchmarks/README.md). Memory freed stays with the process up to `_TRIM_THRESHOLD` (a group worker
  still gives an evicted model's memory back with `malloc_trim`).
"""

from __future__ import annotations

import ctypes
import logging
import sys

from vlmq.settings import Settings

log = logging.getLogger("vlmq.worker")
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8  # glibc's malloc.h
_MMAP_THRESHOLD = 32 * 2**20  # glibc's largest (half its heap size on 64-bit): larger buffers are mmap'd still
_TRIM_THRESHOLD = 2**30
_TOP_PAD = 64 * 2**20


def tune(settings: Settings) -> None:
    import torch

    torch.set_num_threads(settings.torch_threads)
    sys.setswitchinterval(settings.gil_switch_ms / 1000)
    if settings.worker_malloc_reuse and not reuse_malloc():
        log.info("malloc left as it is: not glibc, or an option refused")


def reuse_malloc() -> bool:
    """One malloc arena for the process, and freed buffers up to 32 MiB kept for reuse; False where
    the C library is not glibc (or refused an option)."""
    libc = _glibc()
    if libc is None:
        return False
    options = ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
               (_M_TOP_PAD, _TOP_PAD))
    return all(libc.mallopt(option, value) == 1 for option, value in options)


def trim_malloc() -> None:
    """Give the heap's free pages back to the system now (a group worker, after evicting a model):
    glibc keeps them otherwise, up to `_TRIM_THRESHOLD` with `reuse_malloc`."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc (`mallopt` and `malloc_trim` are glibc's, not POSIX's)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
