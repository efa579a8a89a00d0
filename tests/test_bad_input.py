"""Inputs that could be misread: each is one clear error naming file and line, before sending."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vbatch.errors import InputError
from vbatch.source.readers import read_rows

from .conftest import SimulatorProcess, read_jsonl, vbatch_cmd

ROWS = "".join(f'{{"id": "r{i}", "prompt": "question {i}"}}\n' for i in range(200)).encode()


def refused(simulator: SimulatorProcess, source: Path, *extra: str) -> str:
    done = subprocess.run(
        vbatch_cmd("run", str(source), "-o", str(source.with_name("out.jsonl")), "--base-url",
                   simulator.url, "--max-tokens", "2", *extra),
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Aborted" not in done.stderr
    assert simulator.stats()["requests_seen"] == 0
    return done.stderr


def test_csv_quote_left_open_is_an_error_not_a_swallowed_row(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,prompt\nr1,"an open quote\nr2,fine\nr3,also fine\n')
    rows = list(read_rows(path))
    assert len(rows) == 1 and rows[0].error is not None
    assert "in.csv:2" in str(rows[0].error) and "quote left open" in str(rows[0].error)


def test_csv_with_a_byte_order_mark_keeps_its_first_column(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes("\ufeffid,prompt\nr1,hello\n".encode())
    assert [row.data for row in read_rows(path)] == [{"id": "r1", "prompt": "hello"}]


def test_truncated_and_fake_gzip_name_the_file(simulator: SimulatorProcess,
                                                tmp_path: Path) -> None:
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(ROWS)[:-40])
    with pytest.raises(InputError, match=r"cut\.jsonl\.gz"):
        list(read_rows(truncated))
    assert "cut.jsonl.gz" in refused(simulator, truncated)
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(ROWS)
    assert "fake.jsonl.gz" in refused(simulator, fake)


def test_parquet_damaged_in_the_middle_is_one_clear_error(simulator: SimulatorProcess,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    table = pa.table({"id": [f"r{i}" for i in range(3000)],
                      "prompt": [f"question number {i} " * 5 for i in range(3000)]})
    pq.write_table(table, path, row_group_size=500, compression="none")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4000] = b"\xff" * 4000
    path.write_bytes(bytes(data))
    assert "in.parquet" in refused(simulator, path)


def test_template_that_raises_names_the_row(simulator: SimulatorProcess,
                                            tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(ROWS[:100])
    said = refused(simulator, path, "--template", "{{ 1 / 0 }}")
    assert "in.jsonl:1" in said and "ZeroDivisionError" in said


def test_template_cannot_reach_python_internals(simulator: SimulatorProcess,
                                                tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(ROWS[:100])
    escape = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    said = refused(simulator, path, "--template", escape)
    assert "in.jsonl:1" in said and "unsafe" in said
    assert not (tmp_path / "out.jsonl").exists() or read_jsonl(tmp_path / "out.jsonl") == []
