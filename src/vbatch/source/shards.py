"""Splitting the input into shards that workers on other machines read on their own.

Uncompressed JSONL splits into byte ranges that start and end on line boundaries, so a
worker seeks straight to its rows; Parquet splits on row groups. Other inputs (CSV, gzip)
cannot be entered in the middle: their shards are row ranges that a worker reaches by
reading past the rows before them (convert large inputs to JSONL or Parquet).
Every shard knows the index of its first row, so row indexes, and the ids made from them,
are the same as in a single-process run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vbatch.source.readers import (
    RawRow,
    detect_format,
    jsonl_rows,
    open_parquet,
    parquet_rows,
    read_rows,
)


@dataclass(frozen=True)
class Shard:
    """Rows ``first_row`` .. ``first_row + rows - 1`` of the input, and where they lie."""

    number: int
    first_row: int
    rows: int
    byte_range: tuple[int, int] | None = None
    first_line: int = 1
    row_groups: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        """The shard's file name stem: ``shard-00012``."""
        return f"shard-{self.number:05d}"


def plan_shards(path: Path, input_format: str | None, shard_rows: int) -> list[Shard]:
    """Shards of about ``shard_rows`` rows covering every row of ``path``, in order."""
    fmt = detect_format(path, input_format)
    if fmt in ("jsonl", "openai-batch") and not path.name.lower().endswith(".gz"):
        return _jsonl_shards(path, shard_rows)
    if fmt == "parquet":
        return _parquet_shards(path, shard_rows)
    total = sum(1 for _ in read_rows(path, input_format))
    return [
        Shard(number, start, min(shard_rows, total - start))
        for number, start in enumerate(range(0, total, shard_rows))
    ]


def _jsonl_shards(path: Path, shard_rows: int) -> list[Shard]:
    shards: list[Shard] = []
    offset = start_offset = 0
    rows = first_row = 0
    first_line = 1
    with open(path, "rb", buffering=1 << 20) as handle:
        for line_no, line in enumerate(handle, start=1):
            if rows == shard_rows:
                shards.append(Shard(len(shards), first_row, rows, (start_offset, offset),
                                    first_line))
                first_row += rows
                rows = 0
                start_offset, first_line = offset, line_no
            offset += len(line)
            if line.strip():
                rows += 1
    if rows:
        shards.append(Shard(len(shards), first_row, rows, (start_offset, offset), first_line))
    return shards


def _parquet_shards(path: Path, shard_rows: int) -> list[Shard]:
    metadata = open_parquet(path).metadata
    shards: list[Shard] = []
    groups: list[int] = []
    rows = first_row = 0
    for group in range(metadata.num_row_groups):
        groups.append(group)
        rows += metadata.row_group(group).num_rows
        if rows >= shard_rows:
            shards.append(Shard(len(shards), first_row, rows, row_groups=tuple(groups)))
            first_row += rows
            groups, rows = [], 0
    if rows:
        shards.append(Shard(len(shards), first_row, rows, row_groups=tuple(groups)))
    return shards


def read_shard(path: Path, input_format: str | None, shard: Shard) -> Iterator[RawRow]:
    """The rows of ``shard``, with the same indexes and locations as in the whole file."""
    if shard.byte_range is not None:
        return _jsonl_range(path, shard)
    if shard.row_groups is not None:
        return parquet_rows(path, list(shard.row_groups), shard.first_row)
    rows = read_rows(path, input_format)
    return itertools.islice(rows, shard.first_row, shard.first_row + shard.rows)


def _jsonl_range(path: Path, shard: Shard) -> Iterator[RawRow]:
    assert shard.byte_range is not None
    start, end = shard.byte_range
    with open(path, "rb", buffering=1 << 20) as handle:
        handle.seek(start)
        yield from jsonl_rows(_lines_until(handle, end - start), path, shard.first_row,
                              shard.first_line, start)


def _lines_until(handle: Iterator[bytes], length: int) -> Iterator[bytes]:
    for line in handle:
        if length <= 0:
            return
        length -= len(line)
        yield line
