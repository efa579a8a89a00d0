"""Records as columns: what a DataFrame, an Arrow table, a Dataset and a Parquet file hold.

A record becomes one flat row (:func:`flat_record`): ``usage`` becomes ``prompt_tokens``,
``completion_tokens`` and ``total_tokens`` (its other entries, if any, ``usage_details``);
``error`` becomes ``error`` (the message), ``error_type`` and ``error_status_code``. Each
column's Arrow type is chosen from every value it holds (:class:`ColumnTypes`), so that the
chunks of a long output share one schema: text, integers, floats, booleans, lists of text or of
numbers, a rerank's ranking (a list of ``{index, relevance_score}``); anything else (tool calls,
logprobs, nested kept fields) is JSON text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import pyarrow as pa

from vbatch.output.records import RECORD_COLUMNS, USAGE_FIELDS, taken_columns
from vbatch.structured.columns import ParsedColumns

__all__ = ["ColumnTypes", "arrow_table", "flat_record", "taken_columns"]

# One entry of a rerank record's ``results``.
_RANKED = {"index": pa.int64(), "relevance_score": pa.float64()}


def flat_record(record: dict[str, Any], parsed: ParsedColumns | None = None) -> dict[str, Any]:
    """The record as one flat row of columns; ``parsed`` says which columns its ``parsed``
    value becomes (else one column of it)."""
    row: dict[str, Any] = {}
    for name, value in record.items():
        if name == "parsed" and parsed is not None:
            parsed.spread(value, row)
        elif name == "result" and isinstance(value, dict) and value:
            # A program's dict result: one column per key (``KEY_result`` when taken).
            for key, item in value.items():
                column = str(key)
                row[column + "_result" if column in RECORD_COLUMNS else column] = item
        elif name == "usage":
            usage = value if isinstance(value, dict) else {}
            for key in USAGE_FIELDS:
                row[key] = usage.get(key)
            rest = {k: v for k, v in usage.items() if k not in USAGE_FIELDS}
            if rest:
                row["usage_details"] = rest
        elif name == "error":
            error = value if isinstance(value, dict) else {}
            row["error"] = error.get("message")
            row["error_type"] = error.get("type")
            row["error_status_code"] = error.get("status_code")
        else:
            row[name] = value
    return row


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list) and all(isinstance(v, str) or v is None for v in value):
        return "list_str"
    if isinstance(value, list) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                       for v in value):
        return "list_float"
    if isinstance(value, list) and all(isinstance(v, dict) and v.keys() == _RANKED.keys()
                                       for v in value):
        return "ranking"
    return "json"


# The type of a known column that holds only nulls so far (a later chunk may hold values).
_KNOWN = {"index": "int", "prompt_tokens": "int", "completion_tokens": "int",
          "total_tokens": "int", "error_status_code": "int", "attempts": "int",
          "latency_s": "float", "clamped_max_tokens": "int", "context_truncated": "bool"}
_ARROW = {"null": pa.string(), "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(),
          "str": pa.string(), "list_str": pa.list_(pa.string()),
          "list_float": pa.list_(pa.float64()), "ranking": pa.list_(pa.struct(_RANKED)),
          "json": pa.string()}


class ColumnTypes:
    """The columns seen so far, in order of first appearance, and the kinds of their values."""

    def __init__(self, declared: dict[str, pa.DataType | None] | None = None) -> None:
        self._kinds: dict[str, set[str]] = {}
        self._sizes: dict[str, set[int]] = {}
        # Columns whose type a spec gives (None: JSON text), whatever their values.
        self._declared = declared or {}

    def see(self, row: dict[str, Any]) -> None:
        """Take note of one flat row's values."""
        for name, value in row.items():
            kind = _kind(value)
            self._kinds.setdefault(name, set()).add(kind)
            if kind == "list_float":
                self._sizes.setdefault(name, set()).add(len(value))

    def _column_kind(self, name: str) -> str:
        if name in self._declared:
            return "json" if self._declared[name] is None else "declared"
        kinds = self._kinds[name] - {"null"}
        if not kinds:
            return _KNOWN.get(name, "null")
        if len(kinds) == 1:
            return next(iter(kinds))
        if kinds == {"int", "float"}:
            return "float"
        return "json"

    def _type(self, name: str) -> pa.DataType:
        kind = self._column_kind(name)
        if kind == "declared":
            return self._declared[name]
        if name == "embedding" and kind == "list_float":
            sizes = self._sizes.get(name, set())
            return (pa.list_(pa.float32(), next(iter(sizes))) if len(sizes) == 1
                    else pa.list_(pa.float32()))
        return _ARROW[kind]

    def schema(self) -> pa.Schema:
        """One Arrow schema for every row seen; an ``embedding`` is a (fixed-size, when every
        row's has the same size) list of float32."""
        return pa.schema([(name, self._type(name)) for name in self._kinds])

    def column(self, name: str, values: list[Any]) -> pa.Array:
        """``values`` of column ``name`` as an Arrow array of the column's type."""
        if self._column_kind(name) == "json":
            values = [None if v is None else v if isinstance(v, str)
                      else orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY).decode()
                      for v in values]
        return pa.array(values, type=self._type(name))

    def batch(self, rows: list[dict[str, Any]]) -> pa.RecordBatch:
        """Flat ``rows`` (seen before) as one record batch of :meth:`schema`."""
        schema = self.schema()
        arrays = [self.column(name, [row.get(name) for row in rows]) for name in schema.names]
        return pa.RecordBatch.from_arrays(arrays, schema=schema)


def arrow_table(records: Iterable[dict[str, Any]], parsed: ParsedColumns | None = None
                ) -> pa.Table:
    """Records (held in memory) as one Arrow table of flat rows (``parsed``: the columns of
    their ``parsed`` value)."""
    rows = [flat_record(record, parsed) for record in records]
    types = ColumnTypes(parsed.types if parsed is not None else None)
    for row in rows:
        types.see(row)
    if not rows:
        return pa.table({})
    return pa.Table.from_batches([types.batch(rows)])
