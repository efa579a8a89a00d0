"""What an output format is. Records are journaled as JSON lines while a run goes (that is
what makes a kill -9 lose nothing and a rerun resume); a format says which file names it
writes and turns the finished journal into the file a user opens."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson

__all__ = ["OutputFormat", "record_lines"]


class OutputFormat(ABC):
    """One kind of output file; ``suffixes`` are the endings of the names it writes."""

    name: str
    suffixes: tuple[str, ...]

    def journal(self, output: Path) -> Path:
        """Where the run journals its records (JSON lines) for ``output``: resume reads it."""
        return output

    @abstractmethod
    def finish(self, journal: Path, output: Path, ordered: bool) -> None:
        """Make the finished run's file at ``output`` from ``journal``; ``ordered``: in input
        order."""


def record_lines(journal: Path, ordered: bool) -> Iterator[bytes]:
    """The journal's record lines, in input order when ``ordered`` (24 bytes a record held)."""
    if not ordered:
        with open(journal, "rb") as handle:
            yield from (line for line in handle if line.strip())
        return
    indices, offsets, lengths = [], [], []
    with open(journal, "rb") as handle:
        offset = 0
        for line in handle:
            if line.strip():
                indices.append(orjson.loads(line)["index"])
                offsets.append(offset)
                lengths.append(len(line))
            offset += len(line)
    order = np.argsort(np.asarray(indices, dtype=np.int64), kind="stable")
    starts = np.asarray(offsets, dtype=np.int64)[order].tolist()
    sizes = np.asarray(lengths, dtype=np.int64)[order].tolist()
    del indices, offsets, lengths
    with open(journal, "rb") as handle:
        fd = handle.fileno()
        for start, size in zip(starts, sizes, strict=True):
            yield os.pread(fd, size, start)
