"""The append-only output: one writer, frequent flushes, fsync at checkpoints.

Records are appended as whole lines with ``O_APPEND``; a crash can at worst leave the last
line torn, which :func:`vbatch.output.ledger.repair_torn_tail` removes before the next run. Records
still in the buffer when the process dies are simply not recorded, so those rows run again
on resume: nothing is lost and nothing is written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from vbatch.errors import OutputError, OutputWriteError, write_failure
from vbatch.output.atomic import replaced

_BUFFER_LIMIT = 1 << 20


class ResultWriter:
    """Appends records to ``path``; used from one event loop."""

    def __init__(
        self,
        path: Path,
        *,
        flush_interval: float = 0.2,
        fsync_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = path
        self.flush_interval = flush_interval
        self.fsync_interval = fsync_interval
        self._clock = clock
        self._buffer = bytearray()
        self._fd: int | None = None
        self._size = 0
        self._broken: OutputWriteError | None = None
        self._last_fsync = clock()

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise write_failure(self.path, exc) from None

    def add(self, record: dict[str, Any]) -> None:
        """Queue one record; it reaches the file at the next flush."""
        self._buffer += orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        if len(self._buffer) >= _BUFFER_LIMIT:
            self.flush()

    def flush(self) -> None:
        """Write the buffered records to the file (not yet fsynced).

        When the file system refuses the write midway (a full disk), the part of the
        buffer already written is cut off again, so no partial record stays for a later
        append to be glued to, and :class:`OutputWriteError` is raised, now and on every
        later call: the records not written are not recorded and run again on resume.
        """
        if self._broken is not None:
            raise self._broken
        if not self._buffer or self._fd is None:
            return
        written = 0
        with memoryview(self._buffer) as view:
            try:
                while written < len(view):
                    with view[written:] as rest:
                        written += os.write(self._fd, rest)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
                self._broken = write_failure(self.path, exc)
                raise self._broken from None
        self._size += written
        self._buffer.clear()

    def fsync(self) -> None:
        """Flush, then make what was written durable."""
        self.flush()
        self._sync()
        self._last_fsync = self._clock()

    def _sync(self) -> None:
        if self._fd is None:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._broken = write_failure(self.path, exc)
            raise self._broken from None

    async def run_checkpoints(self) -> None:
        """Flush every ``flush_interval`` and fsync every ``fsync_interval``, until cancelled."""
        while True:
            await asyncio.sleep(self.flush_interval)
            self.flush()
            if self._clock() - self._last_fsync >= self.fsync_interval and self._fd is not None:
                self._last_fsync = self._clock()
                await asyncio.to_thread(self._sync)

    def close(self) -> None:
        """Flush, fsync and close; raises :class:`OutputWriteError` if any write failed."""
        if self._fd is None:
            return
        try:
            self.fsync()
        finally:
            os.close(self._fd)
            self._fd = None


def record_lines(path: Path, ordered: bool) -> Iterator[bytes]:
    """The record lines of ``path``, in input order when ``ordered``: then only each record's
    index, offset and length are held in memory (24 bytes a record), and the records are
    read from the file."""
    if not ordered:
        with open(path, "rb") as handle:
            yield from (line for line in handle if line.strip())
        return
    indices: list[int] = []
    offsets: list[int] = []
    lengths: list[int] = []
    with open(path, "rb") as handle:
        offset = 0
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    indices.append(orjson.loads(line)["index"])
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    raise OutputError(f"{path}:{line_no} is not a vbatch record") from None
                offsets.append(offset)
                lengths.append(len(line))
            offset += len(line)
    order = np.argsort(np.asarray(indices, dtype=np.int64), kind="stable")
    starts = np.asarray(offsets, dtype=np.int64)[order].tolist()
    sizes = np.asarray(lengths, dtype=np.int64)[order].tolist()
    del indices, offsets, lengths
    with open(path, "rb") as handle:
        fd = handle.fileno()
        for start, size in zip(starts, sizes, strict=True):
            yield os.pread(fd, size, start)


def write_in_input_order(path: Path) -> None:
    """Rewrite the output with its records sorted by ``index``, atomically."""
    try:
        with replaced(path, ".ordering") as target:
            for line in record_lines(path, ordered=True):
                target.write(line)
    except OSError as exc:
        raise write_failure(path, exc) from None
