"""Parquet: records are journaled as JSON lines beside the output while the run goes
(``OUTPUT.journal.jsonl``, what a resume reads), and the Parquet file is written from the
journal at the end, atomically, in row groups of flat rows (:mod:`vbatch.output.table`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson

from vbatch.errors import OutputError, write_failure
from vbatch.output.atomic import replaced
from vbatch.output.formats.base import OutputFormat
from vbatch.output.table import ColumnTypes, flat_record

__all__ = ["Parquet"]

ROW_GROUP = 16_384


def _lines(journal: Path, ordered: bool) -> Iterator[bytes]:
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


class Parquet(OutputFormat):
    """An Apache Parquet file of flat rows (``pd.read_parquet``, ``datasets``, DuckDB)."""

    name = "Parquet"
    suffixes = (".parquet", ".pq")

    def journal(self, output: Path) -> Path:
        return output.with_name(output.name + ".journal.jsonl")

    def finish(self, journal: Path, output: Path, ordered: bool) -> None:
        import pyarrow.parquet as pq

        types = ColumnTypes()
        types.see({"id": "", "index": 0, "status": "ok"})
        for line in _lines(journal, ordered=False):
            types.see(flat_record(orjson.loads(line)))
        schema = types.schema()
        try:
            with replaced(output, ".writing") as target, \
                    pq.ParquetWriter(target, schema, compression="zstd") as writer:
                rows = []
                for line in _lines(journal, ordered):
                    rows.append(flat_record(orjson.loads(line)))
                    if len(rows) == ROW_GROUP:
                        writer.write_batch(types.batch(rows))
                        rows = []
                if rows:
                    writer.write_batch(types.batch(rows))
        except OSError as exc:
            raise write_failure(output, exc) from None
        except (KeyError, ValueError) as exc:
            raise OutputError(f"cannot write {output} from {journal}: {exc}") from None
