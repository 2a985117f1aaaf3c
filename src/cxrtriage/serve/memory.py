"""The C allocator of a long-running server: fewer malloc arenas, freed memory handed back to the system.

glibc's ``malloc`` gives each thread that allocates an arena of its own (up to 8 per core) and keeps memory freed
inside an arena for reuse. A server whose request threads decode images and run NumPy therefore holds, after a
while, the high-water mark of every arena; and loading the models (ONNX files parsed, copied into sessions, the
copies freed) leaves freed pages in the heap. :func:`configure_malloc` (before the threads start) and
:func:`release_free_memory` (after start-up, and every ``ServeSettings.release_memory_every`` uploads) keep that
down; ``benchmarks/serve_memory.py`` measures it.
Both do nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

__all__ = ["configure_malloc", "release_free_memory"]

log = logging.getLogger(__name__)

#: ``mallopt`` parameter numbers (glibc ``malloc.h``): the arena limit and the mmap threshold.
_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None  # not glibc (e.g. musl, macOS)
    return libc


def configure_malloc(arenas: int = 2, mmap_threshold: int | None = None) -> bool:
    """Cap the malloc arenas, and optionally fix the mmap threshold (glibc ``mallopt``).

    * ``M_ARENA_MAX`` (as ``MALLOC_ARENA_MAX``): threads beyond ``arenas`` share arenas (a little lock
      contention, far less memory held). Call it before the threads that allocate start; arenas made
      earlier stay.
    * ``M_MMAP_THRESHOLD`` (only when ``mmap_threshold`` is given): blocks of at least that many bytes are mapped
      on their own and unmapped when freed, and glibc stops raising the threshold itself. It keeps the heap from
      holding the high-water mark of large blocks, but every such block then costs fresh pages:
      ``benchmarks/serve_memory.py`` measured about 25 % more CPU per upload at 256 KB, so ``cxr serve`` does
      not set it (it releases the heap's free memory now and then instead, :func:`release_free_memory`).

    Parameters
    ----------
    arenas : int
        Largest number of arenas, >= 1.
    mmap_threshold : int, optional
        Bytes, >= 4096; None: leave glibc's dynamic threshold.

    Returns
    -------
    bool
        True when the settings were made (glibc), False otherwise.

    Raises
    ------
    ValueError
        ``arenas`` < 1 or ``mmap_threshold`` < 4096.
    """
    if arenas < 1:
        raise ValueError(f"need at least one malloc arena, got {arenas}")
    if mmap_threshold is not None and mmap_threshold < 4096:
        raise ValueError(f"mmap_threshold must be >= 4096 bytes, got {mmap_threshold}")
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_ARENA_MAX, arenas))
    if mmap_threshold is not None:
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and ok
    return ok


def release_free_memory() -> bool:
    """Hand the memory that is free inside the C heap back to the system (``malloc_trim(0)``).

    Returns
    -------
    bool
        True when some memory was released, False when none was or the C library is not glibc.
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))
