"""The records of a run, given back as the kind of thing that went in: a list of records in
input order, a DataFrame with the input's index and columns, a pyarrow Table with the input's
columns (for a RecordBatchReader, which is read once: the results with each row's id and
index), a Dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from vbatch.api.rows import Spooled
from vbatch.ids import id_hash
from vbatch.output.table import arrow_table
from vbatch.structured.columns import ParsedColumns

__all__ = ["in_input_order", "shaped_like"]

# Columns the caller's rows already say (their id and position) or that only resume needs.
_LEFT_OUT = ("id", "index", "request_hash")
RESULT_SUFFIX = "_result"


def in_input_order(journal: Path, spooled: Spooled) -> list[dict[str, Any] | None]:
    """The records of ``journal`` for the rows spooled, one per row in input order (None for a
    row without a record: the run was interrupted)."""
    ordered: list[dict[str, Any] | None] = [None] * spooled.count
    elsewhere: dict[int, int] | None = None
    if not journal.exists():
        return ordered
    with open(journal, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = orjson.loads(line)
            key = id_hash(str(record["id"]))
            position = record.get("index")
            if not (isinstance(position, int) and 0 <= position < spooled.count
                    and spooled.id_hashes[position] == key):
                # A record cached from a call whose rows came in another order.
                if elsewhere is None:
                    elsewhere = {int(h): i for i, h in enumerate(spooled.id_hashes.tolist())}
                position = elsewhere.get(key)
                if position is None:
                    continue
                record["index"] = position
            ordered[position] = record
    return ordered


def _all_rows(records: list[dict[str, Any] | None], parsed: ParsedColumns | None) -> pa.Table:
    return arrow_table((record or {"status": None} for record in records), parsed)


def _result_table(records: list[dict[str, Any] | None], parsed: ParsedColumns | None
                  ) -> pa.Table:
    table = _all_rows(records, parsed)
    return table.drop_columns([name for name in _LEFT_OUT if name in table.column_names])


def _names(results: pa.Table, taken: set[str]) -> list[str]:
    return [name + RESULT_SUFFIX if name in taken else name for name in results.column_names]


def shaped_like(rows: Any, kind: str, records: list[dict[str, Any] | None],
                parsed: ParsedColumns | None = None) -> Any:
    """``records`` as the kind of ``rows``: see the module's doc. A result column whose name
    the input already uses gets the suffix ``_result``; ``parsed`` says which typed columns
    the records' ``parsed`` values become."""
    if kind == "records":
        return records
    if kind == "arrow" and not isinstance(rows, pa.Table):
        # A RecordBatchReader was read as it went: the results, with the rows' ids.
        return _all_rows(records, parsed)
    results = _result_table(records, parsed)
    if kind == "pandas":
        frame = results.to_pandas()
        frame.columns = _names(results, set(map(str, rows.columns)))
        frame.index = rows.index
        import pandas as pd

        return pd.concat([rows, frame], axis=1)
    if kind == "datasets":
        import datasets

        renamed = results.rename_columns(_names(results, set(rows.column_names)))
        extra = datasets.Dataset(pa.Table.from_batches(renamed.to_batches(), renamed.schema))
        return datasets.concatenate_datasets([rows.flatten_indices(), extra], axis=1)
    table = rows
    for name, column in zip(_names(results, set(table.column_names)), results.columns,
                            strict=True):
        table = table.append_column(name, column)
    return table
