"""Streaming readers: JSONL (optionally gzipped), CSV and Parquet, one row at a time.

A reader never loads the file whole. Each row comes with its 0-based ``index`` among the
rows and a human ``location`` (``file:line`` or ``file row N``) for error messages. A row
that cannot be parsed comes with ``data`` None and the ``error`` that says why, so the
caller decides whether that ends the run or becomes a ``bad_input`` record.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from vbatch.errors import ConfigError, InputError


@dataclass(slots=True)
class RawRow:
    """One row of the input, parsed or not."""

    index: int
    location: str
    data: dict[str, Any] | None
    error: InputError | None = None
    offset: int = -1
    line: int = 0


def detect_format(path: Path, override: str | None = None) -> str:
    """``jsonl``, ``csv``, ``parquet``, ``arrow`` (IPC file or stream) or ``datasets`` (a
    directory saved by ``Dataset.save_to_disk``), from ``override`` or the name."""
    if override:
        return override
    if path.is_dir():
        if (path / "state.json").exists():
            return "datasets"
        raise ConfigError(f"{path} is a directory but not a saved dataset (no state.json): "
                          "give a file, or a directory written by Dataset.save_to_disk")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if last in (".csv", ".tsv"):
        return "csv"
    if last in (".parquet", ".pq"):
        return "parquet"
    if last in (".arrow", ".feather", ".ipc"):
        return "arrow"
    raise ConfigError(f"cannot tell the format of {path} from its name: use --input-format "
                      "jsonl|csv|parquet|arrow")


UTF8_BOM = b"\xef\xbb\xbf"


def open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped when the name ends in ``.gz``."""
    if path.name.lower().endswith(".gz"):
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
    return open(path, "rb", buffering=1 << 20)


def read_rows(path: Path, input_format: str | None = None) -> Iterator[RawRow]:
    """Stream the rows of ``path``."""
    if not path.exists():
        raise ConfigError(f"input file {path} does not exist")
    fmt = detect_format(path, input_format)
    if fmt in ("jsonl", "openai-batch"):
        return _unbroken(_read_jsonl(path), path)
    if fmt == "csv":
        return _unbroken(_read_csv(path), path)
    if fmt == "arrow":
        return _unbroken(_read_arrow(path), path)
    if fmt == "datasets":
        return _unbroken(_read_saved_dataset(path), path)
    return _unbroken(_read_parquet(path), path)


def _unbroken(rows: Iterator[RawRow], path: Path) -> Iterator[RawRow]:
    """``rows``, with a file that breaks off while it is read told as an InputError."""
    last = "its start"
    try:
        for row in rows:
            last = row.location
            yield row
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(str(path), f"cannot be read past {last} ({exc})",
                         hint="the file is truncated or damaged; recreate it") from None
    except Exception as exc:
        if type(exc).__module__.split(".")[0] != "pyarrow":
            raise
        raise InputError(str(path), f"cannot be read past {last} ({exc})",
                         hint="the file is truncated or damaged; recreate it") from None


def _non_utf8_problem(raw: bytes) -> str | None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start]
        return (
            f"non-UTF-8 byte 0x{bad:02x} at column {exc.start + 1}; "
            "re-encode the file as UTF-8 (e.g. iconv -t UTF-8)"
        )
    return None


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    with open_binary(path) as handle:
        yield from jsonl_rows(handle, path)


def jsonl_rows(
    lines: Iterable[bytes], path: Path, first_index: int = 0, first_line: int = 1,
    first_offset: int = 0,
) -> Iterator[RawRow]:
    """The rows of JSONL ``lines``, numbered from ``first_index`` (row) and ``first_line``.

    Each row knows its line's byte ``offset`` (meaningful for an uncompressed file).
    """
    index = first_index
    offset = first_offset
    for line_no, raw in enumerate(lines, start=first_line):
        start = offset
        offset += len(raw)
        if not raw.strip():
            continue
        yield jsonl_row(raw, path, index, line_no, start)
        index += 1


def without_bom(raw: bytes) -> bytes:
    """``raw`` without the UTF-8 byte order mark some editors put at a file's start."""
    return raw[len(UTF8_BOM):] if raw.startswith(UTF8_BOM) else raw


def jsonl_row(raw: bytes, path: Path, index: int, line_no: int, offset: int = -1) -> RawRow:
    """Row ``index`` from the JSONL line ``raw`` (line ``line_no`` of ``path``)."""
    location = f"{path}:{line_no}"
    try:
        data = orjson.loads(without_bom(raw))
    except orjson.JSONDecodeError as exc:
        problem = _non_utf8_problem(raw) or f"malformed JSON ({exc})"
        return RawRow(index, location, None, InputError(location, problem), offset, line_no)
    if not isinstance(data, dict):
        problem = f"expected a JSON object, got {type(data).__name__}"
        return RawRow(index, location, None, InputError(location, problem), offset, line_no)
    return RawRow(index, location, data, None, offset, line_no)


class _LineCounter:
    """Decodes a binary file line by line for ``csv``, remembering how many lines it gave.

    Undecodable bytes become surrogates, so the row that holds them is reported, not the file.
    """

    def __init__(self, handle: IO[bytes]):
        self.handle = handle
        self.lines = 0

    def __iter__(self) -> Iterator[str]:
        for raw in self.handle:
            self.lines += 1
            yield raw.decode("utf-8", "surrogateescape")


def _undecodable(values: list[str]) -> str | None:
    text = "\x1f".join(values)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = text.encode("utf-8", "surrogateescape")
        return _non_utf8_problem(raw) or f"non-UTF-8 byte at column {exc.start + 1}"
    return None


def _read_csv(path: Path) -> Iterator[RawRow]:
    delimiter = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
    with open_binary(path) as handle:
        lines = _LineCounter(handle)
        # strict: a quote opened and never closed is an error, not the rest of the file.
        reader = csv.reader(iter(lines), delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        if header:
            header[0] = header[0].removeprefix("\ufeff")
        if len(set(header)) != len(header):
            raise InputError(f"{path}:1", "the header repeats a column name")
        index = 0
        while True:
            start_line = lines.lines + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                location = f"{path}:{start_line}"
                malformed = f"malformed CSV ({exc})"
                if lines.lines > start_line:
                    malformed += (f": the row starting here runs to line {lines.lines}; "
                                  "is a quote left open?")
                yield RawRow(index, location, None, InputError(location, malformed))
                index += 1
                continue
            if not values:
                continue
            location = f"{path}:{start_line}"
            problem = _undecodable(values)
            if problem:
                yield RawRow(index, location, None, InputError(location, problem))
            elif len(values) != len(header):
                problem = f"{len(values)} fields where the header has {len(header)}"
                yield RawRow(index, location, None, InputError(location, problem))
            else:
                yield RawRow(index, location, dict(zip(header, values, strict=True)))
            index += 1


def open_parquet(path: Path) -> Any:
    """A ``pyarrow.parquet.ParquetFile``, or a ConfigError that says why not."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise ConfigError(f"{path} is not a readable Parquet file: {exc}") from exc


def _read_parquet(path: Path) -> Iterator[RawRow]:
    yield from parquet_rows(path)


def parquet_rows(
    path: Path, row_groups: list[int] | None = None, first_index: int = 0
) -> Iterator[RawRow]:
    """The rows of ``path`` (of only ``row_groups``), numbered from ``first_index``."""
    parquet = open_parquet(path)
    index = first_index
    for batch in parquet.iter_batches(batch_size=4096, row_groups=row_groups):
        for data in batch.to_pylist():
            yield RawRow(index, f"{path} row {index + 1}", data)
            index += 1


def _arrow_batches(path: Path) -> Iterator[Any]:
    """The record batches of an Arrow IPC file (random-access or stream format)."""
    import pyarrow as pa

    try:
        source = pa.memory_map(str(path))
        try:
            reader: Any = pa.ipc.open_file(source)
            batches: Iterable[Any] = (reader.get_batch(i)
                                      for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source.seek(0)
            batches = pa.ipc.open_stream(source)
        yield from batches
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"{path} is not a readable Arrow IPC file: {exc}") from None


def _arrow_rows(paths: list[Path], location: Path) -> Iterator[RawRow]:
    index = 0
    for path in paths:
        for batch in _arrow_batches(path):
            for data in batch.to_pylist():
                yield RawRow(index, f"{location} row {index + 1}", data)
                index += 1


def _read_arrow(path: Path) -> Iterator[RawRow]:
    yield from _arrow_rows([path], path)


def _read_saved_dataset(path: Path) -> Iterator[RawRow]:
    """The rows of a ``save_to_disk`` directory: its Arrow files, in the order state.json
    lists them."""
    try:
        state = orjson.loads((path / "state.json").read_bytes())
        files = [path / entry["filename"] for entry in state["_data_files"]]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}/state.json does not list the dataset's files ({exc!r}): "
                          "save it again with Dataset.save_to_disk") from None
    yield from _arrow_rows(files, path)
