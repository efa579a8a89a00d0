"""``--group-by-prefix``: send rows that share a long prompt prefix one after another.

vLLM's prefix cache keeps the KV blocks of prompts it has seen, but under memory pressure it
evicts them; rows with the same system prompt or few-shot block scattered over the input
pay for the same prefill again and again. Sending them close together lets every row after
the first of a group reuse the cached prefix.

The check pass computes one 8-byte key per row from the start of its prompt text: 16 bits
each of the hashes of its first 64, 256, 1,024 and 4,096 characters. Sorting by the key
(stable, so input order is kept within a group) puts rows with the same first 4,096
characters next to each other, and within a group of the same first 1,024 characters those
sharing more come together, and so on.

``auto`` (the default) groups only where that pays: from the keys of a sample of the rows
(:class:`PrefixSample`: every row of a small input, an even spread of 4,096 to 8,192 rows of a
large one, so that it costs the check pass about 2%) it measures the share of the prompt text
(of each prompt's first 4,096 characters) that rows share with the row sent before them,
grouped and in input order; it groups when grouping shares :data:`GROUPING_GAIN` more of it,
and only then keys every row, in a pass of its own. A sample finds groups of rows that are
large against the spacing of the sample (a few-shot block per task, a system prompt per
template), not pairs scattered over millions of rows: ``on`` groups whatever the sample says,
``off`` never.

Grouped rows are read in the new order by seeking: an uncompressed JSONL input at the line's
byte offset, any other input (``.gz``, CSV, Parquet, Arrow, a saved dataset, a shard of them)
from a copy of its rows written once, in input order, to an unnamed temporary file beside the
output (gone when the run ends, even by kill -9). In memory a row costs its key and prompt
length (10 bytes) until the order is made (up to 8 more while it is sorted), then its place in
the order (4 bytes) and where it lies (12 bytes; 8 for a copy): at most 22 bytes per row, 220 MB
for 10 million rows.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from vbatch.errors import InputError, OutputError
from vbatch.source.readers import RawRow, detect_format, jsonl_row

__all__ = ["GROUPING_GAIN", "PrefixOrder", "PrefixSample", "Sharing", "can_seek", "prefix_key",
           "prompt_text"]

# Characters hashed into each 16-bit part of the key, from the most significant part.
_LEVELS = (64, 256, 1024, 4096)
_LONGEST = _LEVELS[-1]
_CHUNK = 1 << 16
_PAIRS = 1 << 20
# ``auto`` groups when grouping shares this much more of the prompt text than the input order
# (benchmarks/prefix.py --sweep: below it the run is not measurably faster).
GROUPING_GAIN = 0.2
# ``auto``'s sample: every row up to twice this many, then an even spread of this to twice this.
SAMPLE_ROWS = 4096


def prompt_text(content: dict[str, Any]) -> str:
    """The text a request's prompt starts with: its messages in order, or its prompt."""
    messages = content.get("messages")
    if isinstance(messages, list):
        parts = []
        for message in messages:
            if isinstance(message, dict):
                parts.append(f"{message.get('role')}\x01{message.get('content')}")
        return "\x00".join(parts)
    return str(content.get("prompt", ""))


def prefix_key(text: str) -> int:
    """The row's sort key (see the module docstring); only comparable within one process."""
    return ((hash(text[:64]) & 0xFFFF) << 48 | (hash(text[:256]) & 0xFFFF) << 32
            | (hash(text[:1024]) & 0xFFFF) << 16 | hash(text[:4096]) & 0xFFFF)


def can_seek(path: Path, input_format: str | None) -> bool:
    """Whether rows of ``path`` can be read out of order where they lie (uncompressed JSONL)."""
    return (detect_format(path, input_format) in ("jsonl", "openai-batch")
            and not path.name.lower().endswith(".gz"))


@dataclass(frozen=True)
class Sharing:
    """The share of the prompt text each row shares with the row sent before it, grouped and
    in input order."""

    grouped: float
    in_input_order: float

    @property
    def pays(self) -> bool:
        """Whether ``auto`` groups."""
        return self.grouped - self.in_input_order >= GROUPING_GAIN

    def describe(self) -> str:
        return (f"{self.grouped:.0%} of the prompt text is shared with the row before when "
                f"grouped, {self.in_input_order:.0%} in input order")


def _shared_characters(keys: np.ndarray, lengths: np.ndarray, order: np.ndarray | None) -> int:
    """Characters each row shares with the one before it (in ``order``, or in input order),
    estimated and summed, at most the row's own length: the whole key agrees, 4,096; the
    first 1,024 characters agree (48 bits of the key), halfway to 4,096; the first 256 (32
    bits: chance agreements are rare), halfway to 1,024; fewer, none."""
    total = 0
    for start in range(1, keys.size, _PAIRS):
        stop = min(keys.size, start + _PAIRS)
        if order is None:
            these, before, reach_of = keys[start:stop], keys[start - 1:stop - 1], lengths[
                start:stop]
        else:
            places = order[start - 1:stop]
            sorted_keys = keys[places]
            these, before, reach_of = sorted_keys[1:], sorted_keys[:-1], lengths[places[1:]]
        differ = these ^ before
        reach = np.where(differ == 0, _LONGEST, np.where(
            differ >> np.uint64(16) == 0, (1024 + 4096) // 2,
            np.where(differ >> np.uint64(32) == 0, (256 + 1024) // 2, 0)))
        total += int(np.minimum(reach, reach_of).sum())
    return total


class PrefixOrder:
    """Keys and prompt lengths of the rows, collected in input order, and where the rows lie
    (``at_offsets``: their offsets and lines in a JSONL input, collected as they are added;
    else :meth:`spool` copies them)."""

    def __init__(self, at_offsets: bool = False) -> None:
        self.keys: array[int] = array("Q")
        self.lengths: array[int] = array("H")
        self.offsets: array[int] = array("Q")
        self.lines: array[int] = array("I")
        self._at_offsets = at_offsets
        self._order: np.ndarray | None = None
        self._spool: int | None = None

    def add(self, row: RawRow, content: dict[str, Any] | None) -> None:
        if content is None:
            self.keys.append(0)
            self.lengths.append(0)
        else:
            text = prompt_text(content)
            self.keys.append(prefix_key(text))
            self.lengths.append(min(len(text), _LONGEST))
        if self._at_offsets:
            self.offsets.append(max(row.offset, 0))
            self.lines.append(row.line)

    def sharing(self) -> Sharing:
        """What grouping would share, against the input order."""
        keys = self._key_array()
        lengths = np.frombuffer(self.lengths, dtype=np.uint16) if self.lengths else np.empty(
            0, np.uint16)
        whole = int(lengths.sum(dtype=np.int64)) or 1
        grouped = _shared_characters(keys, lengths, self._sorted())
        return Sharing(grouped / whole, _shared_characters(keys, lengths, None) / whole)

    def _key_array(self) -> np.ndarray:
        return np.frombuffer(self.keys, dtype=np.uint64) if self.keys else np.empty(0, np.uint64)

    def _sorted(self) -> np.ndarray:
        if self._order is None:
            keys = self._key_array()
            dtype = np.uint32 if keys.size < 2**32 else np.uint64
            self._order = np.argsort(keys, kind="stable").astype(dtype)
        return self._order

    def order(self) -> np.ndarray:
        """Row indexes in sending order; the keys and lengths are released."""
        order = self._sorted()
        self.keys, self.lengths = array("Q"), array("H")
        return order

    def halve(self) -> None:
        """Keep every other row's key and length (a sample thinned out)."""
        self.keys, self.lengths = self.keys[::2], self.lengths[::2]
        self._order = None

    def spool(self, rows: Callable[[], Iterator[RawRow]], directory: Path, name: str) -> None:
        """Copy ``rows`` (in input order, as added) to an unnamed file in ``directory``, to be
        read from there in any order (the file goes with this object); ``name`` is the
        input, for the error message."""
        offsets: array[int] = array("Q")
        try:
            with tempfile.TemporaryFile(dir=directory, prefix=".vbatch-grouped-") as handle:
                offset = 0
                for row in rows():
                    error = row.error
                    line = orjson.dumps(
                        [row.location, row.data] if error is None else
                        [row.location, None, error.problem, error.field, error.hint]) + b"\n"
                    handle.write(line)
                    offsets.append(offset)
                    offset += len(line)
                handle.flush()
                self._spool = os.dup(handle.fileno())
        except OSError as exc:
            raise OutputError(f"--group-by-prefix cannot write its copy of {name} in "
                              f"{directory} ({exc.strerror}): free some space or choose "
                              "another -o, or run with --group-by-prefix off") from None
        weakref.finalize(self, os.close, self._spool)
        self.offsets, self.lines = offsets, array("I")

    def rows(self, path: Path, order: np.ndarray, first_index: int = 0) -> Iterator[RawRow]:
        """The rows of ``path`` (or of the copy) in ``order`` (positions among the rows added,
        which were rows ``first_index`` onwards of the file)."""
        if self._spool is not None:
            yield from self._spooled_rows(order, first_index)
            return
        with open(path, "rb") as handle:
            for start in range(0, order.size, _CHUNK):
                for position in order[start:start + _CHUNK].tolist():
                    handle.seek(self.offsets[position])
                    yield jsonl_row(handle.readline(), path, first_index + position,
                                    self.lines[position], self.offsets[position])

    def _spooled_rows(self, order: np.ndarray, first_index: int) -> Iterator[RawRow]:
        assert self._spool is not None
        with os.fdopen(os.dup(self._spool), "rb") as handle:
            for start in range(0, order.size, _CHUNK):
                for position in order[start:start + _CHUNK].tolist():
                    handle.seek(self.offsets[position])
                    location, data, *error = orjson.loads(handle.readline())
                    index = first_index + position
                    if data is None:
                        problem, field, hint = error
                        yield RawRow(index, location, None,
                                     InputError(location, problem, field, hint))
                    else:
                        yield RawRow(index, location, data)


class PrefixSample:
    """Keys of an even sample of the rows, for ``auto`` to decide whether grouping pays: the
    caller offers row ``position`` when ``position & mask`` is 0; every row up to
    2 x :data:`SAMPLE_ROWS`, then each time the sample is full it is thinned to every other
    row and ``mask`` takes one in twice as many."""

    def __init__(self) -> None:
        self.mask = 0
        self._keys = PrefixOrder()

    def add(self, row: RawRow, content: dict[str, Any] | None) -> None:
        self._keys.add(row, content)
        if len(self._keys.keys) >= 2 * SAMPLE_ROWS:
            self._keys.halve()
            self.mask = self.mask * 2 + 1

    def sharing(self) -> Sharing:
        """What grouping would share among the rows of the sample, against the input order."""
        return self._keys.sharing()
