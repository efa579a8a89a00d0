"""Resume: what the existing output already holds, kept as bits and 8-byte hashes.

Before a run the output is read once: a torn last line (a crash in mid-write) is cut off,
and the id of every recorded row is hashed. Matching those hashes against the input's ids
gives one bit per input row, "already done", so a run over ten million rows keeps ten
million bits, not ten million Python objects.
"""

from __future__ import annotations

import os
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from vbatch.errors import OutputError

_RECORD_HEAD = re.compile(rb'^\{"id":("(?:[^"\\]|\\.)*"),"index":(\d+),"status":"(ok|failed)"')


@dataclass
class OutputState:
    """What an existing output holds (after removing failed records when retrying them)."""

    done_hashes: np.ndarray
    ok: int
    failed: int
    repaired_bytes: int


def id_hash(row_id: str) -> int:
    """The 64-bit key of an id (stable within one process)."""
    return hash(row_id)


def repair_torn_tail(path: Path) -> int:
    """Cut a torn last line off ``path``; returns how many bytes were removed."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        keep = 0
        position = size
        chunk = 1 << 16
        while position > 0:
            start = max(0, position - chunk)
            handle.seek(start)
            block = handle.read(position - start)
            newline = block.rfind(b"\n")
            if newline != -1:
                keep = start + newline + 1
                break
            position = start
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    return size - keep


@dataclass(frozen=True, slots=True)
class RecordHead:
    """What the ledger reads of a record: its id, row index and status."""

    row_id: str
    index: int
    status: str


def _parse_head(line: bytes, path: Path, line_no: int) -> RecordHead:
    match = _RECORD_HEAD.match(line)
    if match:
        return RecordHead(orjson.loads(match.group(1)), int(match.group(2)),
                          match.group(3).decode())
    try:
        record = orjson.loads(line)
        return RecordHead(str(record["id"]), int(record["index"]), str(record["status"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise OutputError(
            f"{path}:{line_no} is not a vbatch record: move the file away or choose another -o"
        ) from None


def records(path: Path) -> Iterator[tuple[bytes, RecordHead]]:
    """Each record line of the output ``path`` with its head."""
    with open(path, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                yield line, _parse_head(line, path, line_no)


def _drop_failed(path: Path) -> None:
    tmp = path.with_name(path.name + ".retrying")
    try:
        with open(tmp, "wb") as kept:
            for line, head in records(path):
                if head.status != "failed":
                    kept.write(line)
            kept.flush()
            os.fsync(kept.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_output(path: Path, *, retry_failed: bool) -> OutputState:
    """Repair and read an existing output; with ``retry_failed`` its failed records are removed.

    The removal is atomic (a new file renamed over the old one), so a crash leaves either
    the old file or the new one.
    """
    if not path.exists():
        return OutputState(np.empty(0, dtype=np.int64), 0, 0, 0)
    repaired = repair_torn_tail(path)
    if retry_failed:
        _drop_failed(path)
    hashes = array("q")
    ok = failed = 0
    for _, head in records(path):
        if head.status == "failed":
            failed += 1
        else:
            ok += 1
        hashes.append(id_hash(head.row_id))
    done = np.frombuffer(hashes, dtype=np.int64) if hashes else np.empty(0, dtype=np.int64)
    return OutputState(done, ok, failed, repaired)


def done_mask(input_hashes: np.ndarray, state: OutputState) -> tuple[bytes, int]:
    """One packed bit per input row, set where the output has its record; and their count."""
    if state.done_hashes.size == 0:
        return bytes((input_hashes.size + 7) // 8), 0
    done = np.isin(input_hashes, state.done_hashes)
    return np.packbits(done).tobytes(), int(np.count_nonzero(done))


def is_set(mask: bytes, index: int) -> bool:
    """Whether bit ``index`` of a packed mask is set."""
    return bool((mask[index >> 3] >> (7 - (index & 7))) & 1)
