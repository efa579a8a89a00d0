"""Streaming readers and every kind of bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from vbatch import ConfigError
from vbatch.source.readers import detect_format, read_rows


def test_jsonl_skips_blank_lines_and_counts_rows(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b"}')
    rows = list(read_rows(path))
    assert [(r.index, r.location, r.data) for r in rows] == [
        (0, f"{path}:1", {"prompt": "a"}), (1, f"{path}:3", {"prompt": "b"}),
    ]


def test_gzipped_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('{"prompt": "a"}\n{"prompt": "b"}\n')
    assert [r.data for r in read_rows(path)] == [{"prompt": "a"}, {"prompt": "b"}]


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": \n')
    bad = list(read_rows(path))[1]
    assert bad.data is None and bad.error is not None
    assert f"{path}:2" in str(bad.error) and "malformed JSON" in str(bad.error)


def test_non_object_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('["a"]\n')
    assert "expected a JSON object" in str(next(iter(read_rows(path))).error)


def test_non_utf8_byte_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    bad = list(read_rows(path))[1]
    assert bad.error is not None
    text = str(bad.error)
    assert f"{path}:2" in text and "non-UTF-8 byte 0xe9" in text and "column 16" in text


def test_csv_rows_with_multiline_fields(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,prompt\n1,"two\nlines"\n2,plain\n')
    rows = list(read_rows(path))
    assert [r.data for r in rows] == [{"id": "1", "prompt": "two\nlines"},
                                      {"id": "2", "prompt": "plain"}]
    assert rows[1].location == f"{path}:4"


def test_csv_wrong_field_count_and_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,prompt\n1,a,extra\n2,caf\xe9\n")
    first, second = list(read_rows(path))
    assert first.error is not None and "3 fields where the header has 2" in str(first.error)
    assert second.error is not None and "0xe9" in str(second.error)
    assert f"{path}:3" in str(second.error)


def test_parquet_streams_record_batches(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "in.parquet"
    table = pa.table({"id": [f"r{i}" for i in range(10_000)], "prompt": ["p"] * 10_000})
    pq.write_table(table, path, row_group_size=3000)
    rows = list(read_rows(path))
    assert len(rows) == 10_000
    assert rows[9_999].data == {"id": "r9999", "prompt": "p"}
    assert rows[9_999].location == f"{path} row 10000"


def test_format_from_name_and_override(tmp_path: Path) -> None:
    assert detect_format(Path("a.JSONL.gz")) == "jsonl"
    assert detect_format(Path("a.csv")) == "csv"
    assert detect_format(Path("a.parquet")) == "parquet"
    assert detect_format(Path("a.txt"), "jsonl") == "jsonl"
    with pytest.raises(ConfigError, match="--input-format"):
        detect_format(Path("a.txt"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_rows(tmp_path / "nope.jsonl")


def test_input_format_override_reads_any_name(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text(json.dumps({"prompt": "x"}) + "\n")
    assert [r.data for r in read_rows(path, "jsonl")] == [{"prompt": "x"}]
