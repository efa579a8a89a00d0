"""The calls journal (``OUTPUT.calls.jsonl``): every call of a program that got its answer,
with its row, its place in the program and its request's fingerprint, one JSON line each,
written as it finishes. A rerun after kill -9, Ctrl-C or a full disk replays the calls of the
rows not yet recorded from here, without sending them, and carries on at the first call that
is not here (or whose request changed). Removed once every row has its record."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from vbatch.errors import OutputError, OutputWriteError, write_failure

__all__ = ["CallJournal"]


class CallJournal:
    """The journal at ``path``: :meth:`load` the calls of rows not done, then :meth:`add`."""

    def __init__(self, path: Path):
        self.path = path
        self._known: dict[tuple[int, str], tuple[str, dict[str, Any]]] = {}
        self._handle: Any = None

    def load(self, done: bytes, first_row: int, total: int) -> int:
        """Read the calls of the rows ``done`` (one bit per row from ``first_row``) does not
        mark; a line cut by a kill is skipped. Returns how many were read."""
        self._known.clear()
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise OutputError(f"{self.path} is not a calls journal of vbatch's (a symbolic "
                              "link, or not a file): move it away, it was left unchanged")
        if not self.path.exists():
            return 0
        self._check_ours()
        marked = np.unpackbits(np.frombuffer(done, np.uint8), count=total).astype(bool) \
            if total else np.zeros(0, bool)
        with open(self.path, "rb") as handle:
            for line in handle:
                try:
                    entry = orjson.loads(line)
                    offset = entry["index"] - first_row
                    key = (int(entry["index"]), str(entry["call"]))
                    fingerprint, record = str(entry["fingerprint"]), entry["record"]
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
                if 0 <= offset < total and not marked[offset]:
                    self._known[key] = (fingerprint, record)
        return len(self._known)

    def _check_ours(self) -> None:
        with open(self.path, "rb") as handle:
            first = handle.readline()
        try:
            entry = orjson.loads(first) if first.strip() else {}
            ours = not entry or {"index", "call", "fingerprint", "record"} <= entry.keys()
        except (orjson.JSONDecodeError, AttributeError):
            ours = not first.endswith(b"\n")
        if not ours:
            raise OutputError(f"{self.path} is not a calls journal of vbatch's: move it away "
                              "(it was left unchanged), or choose another -o")

    def lookup(self, index: int, call: str) -> tuple[str, dict[str, Any]] | None:
        """The fingerprint and record of call ``call`` of row ``index``, when journaled."""
        return self._known.get((index, call))

    def forget(self, index: int, calls: list[str]) -> None:
        """Drop what is kept of a row's calls once the row has its record."""
        for call in calls:
            self._known.pop((index, call), None)

    def add(self, row_id: str, index: int, call: str, fingerprint: str,
            record: dict[str, Any]) -> None:
        """Journal one answered call (written through to the OS: a kill -9 keeps it)."""
        line = orjson.dumps({"id": row_id, "index": index, "call": call,
                             "fingerprint": fingerprint, "record": record},
                            option=orjson.OPT_APPEND_NEWLINE)
        try:
            if self._handle is None:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                     | os.O_NOFOLLOW, 0o644)
                self._handle = os.fdopen(descriptor, "ab", buffering=0)
            self._handle.write(line)
        except OSError as exc:
            raise write_failure(self.path, exc) from None

    def close(self, complete: bool) -> None:
        """Close the journal; with ``complete`` (every row has its record), remove it."""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None
        if complete:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise OutputWriteError(f"cannot remove {self.path}: {exc.strerror}") from None
