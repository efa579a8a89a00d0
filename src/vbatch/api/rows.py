"""What a caller hands :func:`vbatch.generate`: prompts (``str``), rows (``dict``), a pandas
DataFrame, a pyarrow Table or RecordBatchReader, a ``datasets.Dataset``. The rows are written,
as they are read, to a JSON-lines file the run reads (twice: to check, then to send), so a
generator is never held in memory."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from vbatch.errors import ConfigError, InputError
from vbatch.ids import id_hash

__all__ = ["Spooled", "input_kind", "spool_rows"]

_CHUNK = 8192
_JSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


def _named(value: Any, module: str, name: str) -> bool:
    kind = type(value)
    return any(cls.__module__.split(".")[0] == module and cls.__name__ == name
               for cls in kind.__mro__)


def input_kind(rows: Any) -> str:
    """``pandas``, ``arrow``, ``datasets`` or ``records`` (any other iterable)."""
    if _named(rows, "pandas", "DataFrame"):
        return "pandas"
    if isinstance(rows, pa.Table | pa.RecordBatchReader):
        return "arrow"
    if _named(rows, "datasets", "Dataset"):
        return "datasets"
    if isinstance(rows, str | bytes | dict) or not isinstance(rows, Iterable):
        raise ConfigError(
            f"vbatch.generate takes a list (or any iterable) of prompts or row dicts, a pandas "
            f"DataFrame, a pyarrow Table or a datasets.Dataset, not {type(rows).__name__}"
        )
    return "records"


def _dicts(rows: Any, kind: str) -> Iterator[dict[str, Any]]:
    if kind == "pandas":
        for start in range(0, len(rows), _CHUNK):
            yield from rows.iloc[start:start + _CHUNK].to_dict("records")
    elif kind == "arrow":
        batches = rows.to_batches(max_chunksize=_CHUNK) if isinstance(rows, pa.Table) else rows
        for batch in batches:
            yield from batch.to_pylist()
    elif kind == "datasets":
        for table in rows.with_format("arrow").iter(batch_size=_CHUNK):
            yield from table.to_pylist()
    else:
        for position, row in enumerate(rows):
            if isinstance(row, str):
                yield {"prompt": row}
            elif isinstance(row, dict):
                yield row
            else:
                raise InputError(f"row {position + 1}",
                                 f"expected a prompt (str) or a row (dict), got "
                                 f"{type(row).__name__}")


@dataclass
class Spooled:
    """The rows written: how many, and the hash of each row's id by position."""

    count: int
    id_hashes: np.ndarray


def spool_rows(rows: Any, kind: str, path: Path, id_field: str) -> Spooled:
    """Write ``rows`` to ``path`` as JSON lines; never more than a chunk of them in memory."""
    hashes: list[np.ndarray] = []
    count = 0
    dicts = _dicts(rows, kind)
    with open(path, "wb", buffering=1 << 20) as target:
        while chunk := list(itertools.islice(dicts, _CHUNK)):
            ids = np.empty(len(chunk), dtype=np.int64)
            for offset, row in enumerate(chunk):
                try:
                    target.write(orjson.dumps(row, default=str, option=_JSON))
                except TypeError as exc:
                    raise InputError(f"row {count + offset + 1}",
                                     f"cannot be written as JSON: {exc}") from None
                value = row.get(id_field)
                ids[offset] = id_hash(str(value) if value is not None else str(count + offset))
            hashes.append(ids)
            count += len(chunk)
    return Spooled(count, np.concatenate(hashes) if hashes else np.empty(0, np.int64))
