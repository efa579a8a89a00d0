"""The check pass over the input, before anything is sent.

It reads the input once, streaming: every row is parsed and turned into request content
(so a bad row is found before the first request), rows are counted (the progress total),
each row's id is hashed into an 8-byte slot to find duplicate ids and, later, the rows the
output already holds, so is the request it makes (to find rows changed since they were
recorded), and, when the context must be fitted, each prompt's tokens are
counted exactly into a 4-byte slot.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from vbatch.errors import InputError, RequestError
from vbatch.ids import hash_array, id_hash, repeated_hashes
from vbatch.prepare.builder import RequestBuilder
from vbatch.prepare.tokens import TokenCounter
from vbatch.settings import SourceSettings
from vbatch.source.prefix import PrefixOrder, PrefixSample, can_seek
from vbatch.source.readers import RawRow, read_rows

RowSource = Callable[[], Iterator[RawRow]]


@dataclass(slots=True)
class CheckedRow:
    """A row with its id, and its request content or the reason it has none."""

    row: RawRow
    row_id: str
    content: dict[str, Any] | None
    error: InputError | None


def check_row(builder: RequestBuilder, row: RawRow) -> CheckedRow:
    """Id and content of ``row``; a bad row keeps its id when it has a usable one."""
    if row.error is not None:
        return CheckedRow(row, str(row.index), None, row.error)
    try:
        row_id = builder.row_id(row)
    except InputError as exc:
        return CheckedRow(row, str(row.index), None, exc)
    try:
        return CheckedRow(row, row_id, builder.content(row), None)
    except InputError as exc:
        return CheckedRow(row, row_id, None, exc)


@dataclass
class InputScan:
    """What the check pass found; ``prompt_tokens`` when it counted them (0 for bad rows and
    rows not counted); ``asked_tokens``, each row's own ``max_tokens`` (0: none), when rows
    ask their own (a batch file's lines)."""

    total: int
    bad: int
    id_hashes: np.ndarray
    prompt_tokens: array[int] | None = None
    asked_tokens: array[int] | None = None
    counting_error: str | None = None
    prefix_order: PrefixOrder | None = None
    fingerprints: np.ndarray | None = None
    prefix_sample: PrefixSample | None = None


_COUNT_BATCH = 512


@dataclass
class CheckCount:
    """Rows checked so far, read by the progress view while the check runs."""

    rows: int = 0


class _Counts:
    """Prompt-token counts in row order, filled a batch at a time."""

    def __init__(self, counter: TokenCounter):
        self.counter = counter
        self.values: array[int] = array("I")
        self._pending: list[tuple[int, dict[str, Any]]] = []

    def add(self, content: dict[str, Any] | None) -> None:
        """Count ``content`` (a row's :meth:`~RequestBuilder.counted`); None: not counted."""
        index = len(self.values)
        self.values.append(0)
        if content is not None:
            self._pending.append((index, content))
            if len(self._pending) >= _COUNT_BATCH:
                self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        counted = self.counter.count([content for _, content in self._pending])
        for (index, _), tokens in zip(self._pending, counted, strict=True):
            self.values[index] = tokens
        self._pending.clear()


def scan_input(
    source: SourceSettings,
    builder: RequestBuilder,
    counter: TokenCounter | None = None,
    rows: RowSource | None = None,
    fingerprints: bool = False,
    checked: CheckCount | None = None,
) -> InputScan:
    """Check every row of the input, or of ``rows`` (and count prompt tokens with ``counter``;
    with ``fingerprints``, hash the request each row makes, to compare with a resumed output).

    Raises InputError on the first bad row when ``on_bad_row`` is fail.
    """
    if rows is None:
        rows = partial(read_rows, source.path, source.format)
    hashes = array("q")
    prints: array[int] | None = array("q") if fingerprints else None
    counts = _Counts(counter) if counter is not None else None
    asked: array[int] | None = array("I") if counts is not None and builder.asks_per_row else None
    counting_error = None
    bad = 0
    prefix = None
    if source.group_by_prefix == "on":
        prefix = PrefixOrder(at_offsets=can_seek(source.path, source.format))
    sample = PrefixSample() if source.group_by_prefix == "auto" else None
    for position, row in enumerate(rows()):
        if checked is not None:
            checked.rows += 1
        row_check = check_row(builder, row)
        if prefix is not None:
            prefix.add(row, row_check.content)
        elif sample is not None and not position & sample.mask:
            sample.add(row, row_check.content)
        if row_check.error is not None:
            if source.on_bad_row == "fail":
                raise row_check.error
            bad += 1
        hashes.append(id_hash(row_check.row_id))
        content = row_check.content
        if prints is not None:
            prints.append(0 if content is None else builder.fingerprint(content))
        if counts is not None:
            if asked is not None:
                asked.append(0 if content is None else builder.max_tokens_of(content) or 0)
            try:
                counts.add(None if content is None else builder.counted(content))
            except RequestError as exc:
                counts, asked, counting_error = None, None, str(exc)
    if counts is not None:
        try:
            counts.flush()
        except RequestError as exc:
            counts, counting_error = None, str(exc)
    id_hashes = hash_array(hashes)
    _refuse_duplicates(source, builder, id_hashes, rows)
    values = counts.values if counts is not None else None
    requests = None
    if prints is not None:
        requests = hash_array(prints)
    return InputScan(len(hashes), bad, id_hashes, values, asked, counting_error, prefix, requests,
                     sample)


def _refuse_duplicates(source: SourceSettings, builder: RequestBuilder, hashes: np.ndarray,
                       rows: RowSource) -> None:
    if hashes.size < 2:
        return
    repeated = repeated_hashes(hashes)
    if repeated.size == 0:
        return
    suspects = set(repeated.tolist())
    first_seen: dict[str, str] = {}
    for row in rows():
        row_id = check_row(builder, row).row_id
        if id_hash(row_id) not in suspects:
            continue
        if row_id in first_seen:
            raise InputError(
                row.location,
                f"duplicate id {row_id!r}, first seen at {first_seen[row_id]}",
                source.id_field,
                "ids must be unique; fix the input or choose another --id-field",
            )
        first_seen[row_id] = row.location


def prefix_order_of(source: SourceSettings, builder: RequestBuilder, rows: RowSource
                    ) -> PrefixOrder:
    """Every row's prefix key (and where it lies in a JSONL input), in a pass of its own."""
    order = PrefixOrder(at_offsets=can_seek(source.path, source.format))
    for row in rows():
        order.add(row, check_row(builder, row).content)
    return order
