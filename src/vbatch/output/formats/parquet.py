"""Parquet: records are journaled as JSON lines beside the output while the run goes
(``OUTPUT.journal.jsonl``, what a resume reads), and the Parquet file is written from the
journal at the end, atomically, in row groups of flat rows (:mod:`vbatch.output.table`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from vbatch.errors import OutputError, write_failure
from vbatch.output.atomic import replaced
from vbatch.output.formats.base import OutputFormat
from vbatch.output.writer import record_lines

if TYPE_CHECKING:
    from vbatch.structured.columns import ParsedColumns

__all__ = ["Parquet"]

ROW_GROUP = 16_384


class Parquet(OutputFormat):
    """An Apache Parquet file of flat rows (``pd.read_parquet``, ``datasets``, DuckDB)."""

    name = "Parquet"
    suffixes = (".parquet", ".pq")

    def __init__(self, parsed: ParsedColumns | None = None):
        self.parsed = parsed

    def with_columns(self, parsed: ParsedColumns | None) -> OutputFormat:
        """Parquet whose ``parsed`` columns have the types the spec gives."""
        return Parquet(parsed)

    def journal(self, output: Path) -> Path:
        return output.with_name(output.name + ".journal.jsonl")

    def finish(self, journal: Path, output: Path, ordered: bool) -> None:
        # pyarrow (~30 MB) is loaded only by a run that writes Parquet.
        import pyarrow.parquet as pq

        from vbatch.output.table import ColumnTypes, flat_record

        parsed = self.parsed
        types = ColumnTypes(parsed.types if parsed is not None else None)
        types.see({"id": "", "index": 0, "status": "ok"})
        for line in record_lines(journal, ordered=False):
            types.see(flat_record(orjson.loads(line), parsed))
        schema = types.schema()
        try:
            with replaced(output, ".writing") as target, \
                    pq.ParquetWriter(target, schema, compression="zstd") as writer:
                rows = []
                for line in record_lines(journal, ordered):
                    rows.append(flat_record(orjson.loads(line), parsed))
                    if len(rows) == ROW_GROUP:
                        writer.write_batch(types.batch(rows))
                        rows = []
                if rows:
                    writer.write_batch(types.batch(rows))
        except OSError as exc:
            raise write_failure(output, exc) from None
        except (KeyError, ValueError) as exc:
            raise OutputError(f"cannot write {output} from {journal}: {exc}") from None
