"""Merging shard outputs into the run's output, once per record, even after a crash.

A shard's records are appended to the output unless the output already holds their row,
the output is fsynced, and only then is the shard file removed. A crash at any point
leaves either the shard file (merged again later, its records already in the output
skipped) or nothing left to do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vbatch.output.ledger import records, repair_torn_tail

_BATCH_BYTES = 1 << 20


def shard_files(shard_dir: Path) -> list[Path]:
    """The shard outputs in ``shard_dir``, in shard order."""
    if not shard_dir.is_dir():
        return []
    return sorted(shard_dir.glob("shard-*.jsonl"))


class _RowSet:
    """Row indexes, one byte each."""

    def __init__(self) -> None:
        self._seen = np.zeros(1 << 16, dtype=bool)

    def add(self, index: int) -> bool:
        """Mark ``index``; False when it was marked already."""
        if index >= self._seen.size:
            grown = np.zeros(max(index + 1, 2 * self._seen.size), dtype=bool)
            grown[: self._seen.size] = self._seen
            self._seen = grown
        if self._seen[index]:
            return False
        self._seen[index] = True
        return True


def merge_shards(output: Path, shard_dir: Path) -> int:
    """Move the records of every shard output into ``output``; returns how many were added.

    Records are matched by row index (one byte per input row), so no row gets a second
    record.
    """
    files = shard_files(shard_dir)
    if not files:
        _remove_dir(shard_dir)
        return 0
    seen = _RowSet()
    if output.exists():
        repair_torn_tail(output)
        for _, head in records(output):
            seen.add(head.index)
    added = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for path in files:
            repair_torn_tail(path)
            batch = bytearray()
            for line, head in records(path):
                if not seen.add(head.index):
                    continue
                batch += line
                added += 1
                if len(batch) >= _BATCH_BYTES:
                    _write_all(fd, batch)
                    batch.clear()
            _write_all(fd, batch)
            os.fsync(fd)
            path.unlink()
    finally:
        os.close(fd)
    _remove_dir(shard_dir)
    return added


def _write_all(fd: int, data: bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _remove_dir(shard_dir: Path) -> None:
    if not shard_dir.is_dir():
        return
    if not any(shard_dir.iterdir()):
        shard_dir.rmdir()


def done_bits(mask: bytes, first_row: int, rows: int) -> bytes:
    """Bits ``first_row`` .. ``first_row + rows - 1`` of a packed mask, packed from bit 0."""
    bits = np.unpackbits(np.frombuffer(mask, np.uint8), count=first_row + rows)
    return np.packbits(bits[first_row:]).tobytes()
