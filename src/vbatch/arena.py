"""One C heap for the whole ``vbatch`` process (glibc's ``M_ARENA_MAX`` = 1).

glibc gives each thread that allocates a heap ("arena") of its own and keeps there what the
thread freed. vbatch's check pass parses every row in a worker thread; what it freed stayed in
that thread's heap while the main thread's heap grew for sending. With one heap the sending
reuses it: peak RSS at 200,000 rows against a zero-latency server 78.9 MB, was 81.7-82.8 MB
(``benchmarks/harness.py``'s ``measure``, AMD EPYC AVX2). Only the check pass and fsync run
in threads, so there is no lock to contend for while sending. The CLI sets it before any
thread starts; importing vbatch as a library leaves the host process's heaps alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["use_one_arena"]

_M_ARENA_MAX = -8


def use_one_arena() -> None:
    """Ask glibc for a single heap; nothing where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(ctypes.c_int(_M_ARENA_MAX), ctypes.c_int(1))
