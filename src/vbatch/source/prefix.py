"""``--group-by-prefix``: send rows that share a long prompt prefix one after another.

vLLM's prefix cache keeps the KV blocks of prompts it has seen, but under memory pressure it
evicts them; rows with the same system prompt or few-shot block scattered over the input
pay for the same prefill again and again. Sending them close together lets every row after
the first of a group reuse the cached prefix.

The check pass computes one 8-byte key per row from the start of its prompt text: 16 bits
each of the hashes of its first 64, 256, 1,024 and 4,096 characters. Sorting by the key
(stable, so input order is kept within a group) puts rows with the same first 4,096
characters next to each other, and within a group of the same first 1,024 characters those
sharing more come together, and so on. With the line's byte offset and number (8 + 4
bytes), the rows are then read in that order by seeking. That needs an uncompressed JSONL
input; in all, 12 bytes per row are kept plus the order (4 bytes per row), so 10 million
rows cost about 160 MB.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vbatch.errors import ConfigError
from vbatch.source.readers import RawRow, detect_format, jsonl_row

_LEVELS = ((64, 48), (256, 32), (1024, 16), (4096, 0))
_CHUNK = 1 << 16


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
    key = 0
    for length, shift in _LEVELS:
        key |= (hash(text[:length]) & 0xFFFF) << shift
    return key


def check_groupable(path: Path, input_format: str | None) -> None:
    """``--group-by-prefix`` reads rows by seeking: refuse inputs where that cannot work."""
    if detect_format(path, input_format) != "jsonl" or path.name.lower().endswith(".gz"):
        raise ConfigError(
            f"--group-by-prefix reads {path} out of order, which needs an uncompressed JSONL "
            "input: convert it first (e.g. to .jsonl), or run without --group-by-prefix"
        )


class PrefixOrder:
    """Keys, offsets and line numbers of the rows, collected in input order."""

    def __init__(self) -> None:
        self.keys: array[int] = array("Q")
        self.offsets: array[int] = array("Q")
        self.lines: array[int] = array("I")

    def add(self, row: RawRow, content: dict[str, Any] | None) -> None:
        self.keys.append(prefix_key(prompt_text(content)) if content is not None else 0)
        self.offsets.append(row.offset)
        self.lines.append(row.line)

    def order(self) -> np.ndarray:
        """Row indexes in sending order; the keys are released."""
        keys = np.frombuffer(self.keys, dtype=np.uint64) if self.keys else np.empty(0, np.uint64)
        dtype = np.uint32 if keys.size < 2**32 else np.uint64
        order = np.argsort(keys, kind="stable").astype(dtype)
        self.keys = array("Q")
        return order

    def rows(self, path: Path, order: np.ndarray, first_index: int = 0) -> Iterator[RawRow]:
        """The rows of ``path`` in ``order`` (positions among the rows added, which were rows
        ``first_index`` onwards of the file)."""
        with open(path, "rb") as handle:
            for start in range(0, order.size, _CHUNK):
                for position in order[start:start + _CHUNK].tolist():
                    handle.seek(self.offsets[position])
                    yield jsonl_row(handle.readline(), path, first_index + position,
                                    self.lines[position], self.offsets[position])
