"""Resume: what the existing output already holds, kept as bits and 8-byte hashes.

Before a run the output is read once, every line checked as a whole record: a torn last
line (a crash in mid-write) is cut off, damaged lines and second records of an id are
removed, and the id of every recorded row is hashed. Matching those hashes against the input's ids
gives one bit per input row, "already done", so a run over ten million rows keeps ten
million bits, not ten million Python objects.
"""

from __future__ import annotations

import dataclasses
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from vbatch.errors import OutputError, write_failure
from vbatch.ids import hash_array, id_hash, repeated_hashes
from vbatch.output.atomic import replaced


@dataclass
class OutputState:
    """What an existing output holds (after removing failed records when retrying them)."""

    done_hashes: np.ndarray
    ok: int
    failed: int
    repaired_bytes: int
    done_fingerprints: np.ndarray = dataclasses.field(
        default_factory=lambda: np.empty(0, dtype=np.int64))
    # The input row each record says it answers (its ``index``), in the order of done_hashes.
    done_indices: np.ndarray = dataclasses.field(
        default_factory=lambda: np.empty(0, dtype=np.int64))
    damaged_lines: list[int] = dataclasses.field(default_factory=list)
    damaged: int = 0
    duplicates: int = 0


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
    fingerprint: int = 0


def fingerprint_text(fingerprint: int) -> str:
    """A request fingerprint as the 16 hex digits a record keeps in ``request_hash``."""
    return format(fingerprint & 0xFFFF_FFFF_FFFF_FFFF, "016x")


def _fingerprint(text: Any) -> int:
    if not isinstance(text, str) or len(text) != 16:
        return 0
    try:
        value = int(text, 16)
    except ValueError:
        return 0
    return value - (1 << 64) if value >= 1 << 63 else value


def record_head(line: bytes) -> RecordHead | None:
    """The head of a whole vbatch record line, or None when the line is not one."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    row_id, index, status = record.get("id"), record.get("index"), record.get("status")
    if (not isinstance(row_id, str | int) or isinstance(row_id, bool) or type(index) is not int
            or status not in ("ok", "failed")):
        return None
    return RecordHead(str(row_id), index, status, _fingerprint(record.get("request_hash")))


def records(path: Path) -> Iterator[tuple[bytes, RecordHead]]:
    """Each record line of the output ``path`` with its head (raises on a line that is not)."""
    with open(path, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                head = record_head(line)
                if head is None:
                    raise OutputError(f"{path}:{line_no} is not a vbatch record: move the file "
                                      "away or choose another -o")
                yield line, head


@dataclass
class _Survey:
    """One read of an output: the ids recorded, and what is wrong with it."""

    hashes: array[int]
    failed_hashes: array[int]
    fingerprints: array[int]
    indices: array[int]
    damaged: int = 0
    first_damaged: list[int] = dataclasses.field(default_factory=list)
    torn_bytes: int = 0


def _survey(path: Path) -> _Survey:
    survey = _Survey(array("q"), array("q"), array("q"), array("q"))
    with open(path, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                survey.torn_bytes = len(line)
                break
            if not line.strip():
                continue
            head = record_head(line)
            if head is None:
                survey.damaged += 1
                if len(survey.first_damaged) < 5:
                    survey.first_damaged.append(line_no)
                continue
            survey.hashes.append(id_hash(head.row_id))
            survey.fingerprints.append(head.fingerprint)
            survey.indices.append(head.index)
            if head.status == "failed":
                survey.failed_hashes.append(id_hash(head.row_id))
    return survey


def _rewrite(path: Path, repeated: np.ndarray, drop_failed: bool,
             dropped: frozenset[int] = frozenset(),
             renumbered: dict[int, int] | None = None) -> None:
    """Keep the first record of each id (and with ``drop_failed`` no failed one, and none of
    the ids hashed in ``dropped``; those of ``renumbered`` with their new ``index``),
    atomically."""
    renumbered = renumbered or {}
    watched = set(repeated.tolist())
    seen: set[int] = set()
    with open(path, "rb") as source, replaced(path, ".repairing") as target:
        for line in source:
            if not line.endswith(b"\n"):
                break
            head = record_head(line) if line.strip() else None
            if head is None:
                continue
            key = id_hash(head.row_id)
            if key in dropped:
                continue
            if key in watched:
                if key in seen:
                    continue
                seen.add(key)
            if drop_failed and head.status == "failed":
                continue
            if key in renumbered:
                line = orjson.dumps({**orjson.loads(line), "index": renumbered[key]},
                                   option=orjson.OPT_APPEND_NEWLINE)
            target.write(line)


def read_output(path: Path, *, retry_failed: bool) -> OutputState:
    """Check, repair and read an existing vbatch output.

    Every line must be a whole record. Nothing is changed unless some line is not: then a
    torn last line (a crash in mid-write) is cut off; lines that are not records (a torn
    write a later append was glued to), second records of one id, and with
    ``retry_failed`` failed records are removed by rewriting the file atomically (a crash
    leaves the old file or the new one), so their rows run again. A file in which no line
    is a record is refused untouched: it is not a vbatch output.
    """
    if not path.exists():
        return OutputState(np.empty(0, dtype=np.int64), 0, 0, 0)
    survey = _survey(path)
    if survey.damaged and not survey.hashes:
        raise OutputError(f"{path}:{survey.first_damaged[0]} is not a vbatch record, nor is any "
                          "line: it was not changed; move it away or choose another -o")
    hashes = hash_array(survey.hashes)
    repeated = repeated_hashes(hashes)
    drop_failed = retry_failed and bool(survey.failed_hashes)
    repaired = OutputState(np.empty(0, dtype=np.int64), 0, 0, survey.torn_bytes,
                           damaged_lines=survey.first_damaged, damaged=survey.damaged,
                           duplicates=int(hashes.size - np.unique(hashes).size))
    if survey.damaged or repeated.size or drop_failed:
        try:
            _rewrite(path, repeated, drop_failed)
        except OSError as exc:
            raise write_failure(path, exc) from None
        survey = _survey(path)
        hashes = hash_array(survey.hashes)
    elif survey.torn_bytes:
        repair_torn_tail(path)
    failed = len(survey.failed_hashes)
    fingerprints = hash_array(survey.fingerprints)
    return dataclasses.replace(repaired, done_hashes=hashes, ok=hashes.size - failed,
                               failed=failed, done_fingerprints=fingerprints,
                               done_indices=hash_array(survey.indices))


def changed_rows(input_hashes: np.ndarray, input_fingerprints: np.ndarray,
                 state: OutputState) -> np.ndarray:
    """Per input row: whether the output records it from a request other than the one the
    row makes now (a changed prompt, template or system message). Rows or records without a
    fingerprint (bad rows, records of older versions) count as unchanged."""
    changed = np.zeros(input_hashes.size, dtype=bool)
    if state.done_hashes.size == 0 or input_fingerprints.size != input_hashes.size:
        return changed
    order = np.argsort(state.done_hashes, kind="stable")
    recorded_hashes = state.done_hashes[order]
    recorded = state.done_fingerprints[order]
    position = np.minimum(np.searchsorted(recorded_hashes, input_hashes),
                          recorded_hashes.size - 1)
    found = recorded_hashes[position] == input_hashes
    was = np.where(found, recorded[position], 0)
    changed[:] = found & (was != 0) & (input_fingerprints != 0) & (was != input_fingerprints)
    return changed


def remove_records(path: Path, id_hashes: np.ndarray,
                   renumbered: dict[int, int] | None = None) -> None:
    """Remove the records of the ids hashed in ``id_hashes`` from ``path`` and give those of
    ``renumbered`` (id hash: row) their new ``index``, atomically."""
    try:
        _rewrite(path, np.empty(0, dtype=np.int64), False, frozenset(id_hashes.tolist()),
                 renumbered or {})
    except OSError as exc:
        raise write_failure(path, exc) from None


@dataclass(frozen=True)
class InputDrift:
    """Records that no longer match the input: ``vanished`` (ids the input no longer has:
    their hashes) and ``moved`` (id hash: the row the id is at now, for records whose
    ``index`` says another)."""

    vanished: np.ndarray
    moved: dict[int, int]

    def __bool__(self) -> bool:
        return bool(self.vanished.size or self.moved)


def input_drift(input_hashes: np.ndarray, state: OutputState) -> InputDrift:
    """How the output's records fit the input rows hashed in ``input_hashes`` (by row)."""
    none = np.empty(0, dtype=np.int64)
    if state.done_hashes.size == 0:
        return InputDrift(none, {})
    order = np.argsort(input_hashes, kind="stable")
    sorted_hashes = input_hashes[order]
    spot = np.minimum(np.searchsorted(sorted_hashes, state.done_hashes),
                      max(sorted_hashes.size - 1, 0))
    found = (sorted_hashes[spot] == state.done_hashes) if sorted_hashes.size else np.zeros(
        state.done_hashes.size, dtype=bool)
    rows = order[spot] if sorted_hashes.size else none
    indices = state.done_indices
    moved_mask = found & (rows != indices) if indices.size == found.size else np.zeros_like(
        found)
    moved = dict(zip(state.done_hashes[moved_mask].tolist(), rows[moved_mask].tolist(),
                     strict=True))
    return InputDrift(state.done_hashes[~found], moved)


def ids_of_hashes(path: Path, id_hashes: np.ndarray, most: int) -> list[str]:
    """The ids of up to ``most`` records of ``path`` whose id hashes are in ``id_hashes``."""
    wanted = set(id_hashes[:most].tolist())
    found: list[str] = []
    for _, head in records(path):
        if id_hash(head.row_id) in wanted:
            found.append(head.row_id)
            if len(found) == len(wanted):
                break
    return found


def done_mask(input_hashes: np.ndarray, state: OutputState) -> tuple[bytes, int]:
    """One packed bit per input row, set where the output has its record; and their count."""
    if state.done_hashes.size == 0:
        return bytes((input_hashes.size + 7) // 8), 0
    done = np.isin(input_hashes, state.done_hashes)
    return np.packbits(done).tobytes(), int(np.count_nonzero(done))


def is_set(mask: bytes, index: int) -> bool:
    """Whether bit ``index`` of a packed mask is set."""
    return bool((mask[index >> 3] >> (7 - (index & 7))) & 1)
