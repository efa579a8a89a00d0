"""Shards cover every row once with the whole file's numbering; merging adds each row once."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vbatch.output.merge import done_bits, merge_shards
from vbatch.source.readers import read_rows
from vbatch.source.shards import plan_shards, read_shard

from .conftest import read_jsonl


def rows_of(path: Path, fmt: str | None = None) -> list[tuple[int, str, object]]:
    return [(r.index, r.location, r.data) for r in read_rows(path, fmt)]


def sharded_rows_of(path: Path, shard_rows: int) -> list[tuple[int, str, object]]:
    shards = plan_shards(path, None, shard_rows)
    assert [s.number for s in shards] == list(range(len(shards)))
    assert all(0 < s.rows <= max(shard_rows, 1) or s.row_groups for s in shards)
    return [(r.index, r.location, r.data) for s in shards for r in read_shard(path, None, s)]


def test_jsonl_byte_ranges_match_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = []
    for i in range(103):
        lines.append(json.dumps({"id": i, "prompt": "é" * (i % 7) + "\u2028x"}))
        if i % 10 == 3:
            lines.append("   ")
        if i == 50:
            lines.append("{not json")
    path.write_text("\n".join(lines))
    whole = rows_of(path)
    for shard_rows in (1, 7, 10, 103, 500):
        assert sharded_rows_of(path, shard_rows) == whole
    shards = plan_shards(path, None, 10)
    assert [s.rows for s in shards] == [10] * 10 + [4]
    assert all(s.byte_range is not None for s in shards)
    assert shards[-1].byte_range is not None and shards[-1].byte_range[1] == path.stat().st_size


def test_parquet_shards_are_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    table = pa.table({"id": [f"r{i}" for i in range(95)], "prompt": [f"p {i}" for i in range(95)]})
    pq.write_table(table, path, row_group_size=20)
    shards = plan_shards(path, None, 30)
    assert [s.row_groups for s in shards] == [(0, 1), (2, 3), (4,)]
    assert [(s.first_row, s.rows) for s in shards] == [(0, 40), (40, 40), (80, 15)]
    assert sharded_rows_of(path, 30) == rows_of(path)


@pytest.mark.parametrize("name", ["in.csv", "in.jsonl.gz"])
def test_unseekable_inputs_split_by_row_ranges(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_text("id,prompt\n" + "".join(f'{i},"line {i}\nsecond"\n' for i in range(25)))
    else:
        import gzip

        with gzip.open(path, "wt") as handle:
            handle.writelines(json.dumps({"id": i, "prompt": str(i)}) + "\n" for i in range(25))
    shards = plan_shards(path, None, 10)
    assert [(s.first_row, s.rows, s.byte_range) for s in shards] == [
        (0, 10, None), (10, 10, None), (20, 5, None)
    ]
    assert sharded_rows_of(path, 10) == rows_of(path)


def record(index: int, status: str = "ok") -> str:
    return json.dumps({"id": f"r{index}", "index": index, "status": status, "text": "t"},
                      separators=(",", ":")) + "\n"


def test_merge_adds_each_row_once_and_removes_the_shards(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    shard_dir = tmp_path / "out.jsonl.shards"
    shard_dir.mkdir()
    out.write_text(record(0) + record(1) + '{"id":"r2","ind')
    (shard_dir / "shard-00000.jsonl").write_text(record(1) + record(2) + record(3))
    (shard_dir / "shard-00001.jsonl").write_text(record(4, "failed") + record(3) + '{"id":"r5')
    assert merge_shards(out, shard_dir) == 3
    assert [r["index"] for r in read_jsonl(out)] == [0, 1, 2, 3, 4]
    assert not shard_dir.exists()
    assert merge_shards(out, shard_dir) == 0


def test_merge_interrupted_after_appending_is_repeated_without_duplicates(tmp_path: Path
                                                                          ) -> None:
    out = tmp_path / "out.jsonl"
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    shard = shard_dir / "shard-00000.jsonl"
    shard.write_text(record(0) + record(1))
    out.write_text(record(0) + record(1)[:10])
    assert merge_shards(out, shard_dir) == 1
    assert [r["index"] for r in read_jsonl(out)] == [0, 1]


def test_done_bits_slices_a_packed_mask() -> None:
    import numpy as np

    bits = np.zeros(40, dtype=bool)
    bits[[3, 9, 10, 38]] = True
    mask = np.packbits(bits).tobytes()
    part = np.unpackbits(np.frombuffer(done_bits(mask, 9, 30), np.uint8), count=30)
    assert part.nonzero()[0].tolist() == [0, 1, 29]
