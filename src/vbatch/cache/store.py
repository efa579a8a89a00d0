"""The response cache (``--cache-dir``): answers of deterministic requests, kept across runs in
an SQLite database (WAL mode, so that several processes share it safely), keyed by the served
model's identity and the request, bounded by ``--cache-max-size`` with least-recently-used
eviction."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from vbatch.errors import ConfigError

__all__ = ["LOOKUP_BATCH", "CacheInfo", "ResponseCache", "cache_key", "deterministic",
           "parse_size"]

DATABASE = "responses.sqlite3"
# Keys looked up in one query (SQLite's oldest limit on a statement's parameters is 999).
LOOKUP_BATCH = 256
# Writes are committed in batches of this many (a crash loses at most these: a cache only).
_COMMIT_EVERY = 256
# An answer's last use is written again only when older than this: LRU to the hour, and a
# rerun over a cached dataset writes nothing.
_TOUCH_AFTER_S = 3600.0
# The size is checked, and the least recently used answers evicted, every so many writes.
_CHECK_EVERY = 2048
# Read through a memory map of this much of the file: a lookup then costs no read() call (a
# rerun over 200,000 cached rows took 15% less time). The pages are the file's, which the
# kernel reclaims as it needs.
_MAP_BYTES = 256 << 20
_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key BLOB PRIMARY KEY,
    record BLOB NOT NULL,
    size INTEGER NOT NULL,
    used REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS answers_used ON answers (used);
"""


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: int | str) -> int:
    """Bytes of ``value``: a number of bytes, or ``500M``, ``10G``, ``1T`` (``B``, ``iB``
    accepted)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
        unit = text[-1:] if text[-1:] in _SIZE_UNITS else ""
        try:
            size = int(float(text[: len(text) - len(unit)]) * _SIZE_UNITS[unit])
        except ValueError:
            raise ConfigError(f"--cache-max-size {value!r} is not a size: e.g. 500M, 10G"
                              ) from None
    if size < 1:
        raise ConfigError(f"--cache-max-size must be above 0, not {value!r}")
    return size


def deterministic(body: dict[str, Any]) -> bool:
    """Whether a request's answer is the same each time: greedy, or sampled with a seed."""
    seed = body.get("seed")
    return body.get("temperature") == 0 or (isinstance(seed, int) and not isinstance(seed, bool))


def cache_key(model: str, route: str, body: bytes) -> bytes:
    """The key of a request to ``route`` of the served model ``model`` (its identity)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (model.encode(), b"\0", route.encode(), b"\0", body):
        digest.update(part)
    return digest.digest()


@dataclass(frozen=True)
class CacheInfo:
    """What a cache holds."""

    path: Path
    answers: int
    size_bytes: int


class ResponseCache:
    """The cache in ``directory`` (made if missing), at most ``max_bytes`` of answers."""

    def __init__(self, directory: Path, max_bytes: int):
        self.path = Path(directory) / DATABASE
        self.max_bytes = max_bytes
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA mmap_size={_MAP_BYTES}")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"--cache-dir {directory}: cannot open the cache "
                              f"{self.path}: {exc}") from None
        self._pending = 0
        self._since_check = 0
        self._used: list[bytes] = []
        self.hits = 0
        self.stored = 0

    def get(self, key: bytes) -> dict[str, Any] | None:
        """The answer stored for ``key``, else None."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: list[bytes]) -> dict[bytes, dict[str, Any]]:
        """The answers stored for those of ``keys`` the cache holds (at most
        :data:`LOOKUP_BATCH` keys: one query)."""
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = self._db.execute(f"SELECT key, record, used FROM answers WHERE key IN ({marks})",
                                keys).fetchall()
        self.hits += len(rows)
        stale = time.time() - _TOUCH_AFTER_S
        found: dict[bytes, dict[str, Any]] = {}
        for key, record, used in rows:
            found[key] = orjson.loads(record)
            if used < stale:
                self._used.append(key)
        if len(self._used) >= _COMMIT_EVERY:
            self._touch()
        return found

    def put(self, key: bytes, record: dict[str, Any]) -> None:
        """Store the answer ``record`` for ``key`` (committed in batches)."""
        blob = orjson.dumps(record)
        if self._pending == 0:
            self._db.execute("BEGIN")
        self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                         (key, blob, len(blob) + len(key), time.time()))
        self.stored += 1
        self._pending += 1
        self._since_check += 1
        if self._pending >= _COMMIT_EVERY:
            self._commit()
        if self._since_check >= _CHECK_EVERY:
            self.evict()

    def _commit(self) -> None:
        if self._pending:
            self._db.execute("COMMIT")
            self._pending = 0

    def _touch(self) -> None:
        if self._used:
            self._commit()
            now = time.time()
            self._db.executemany("UPDATE answers SET used = ? WHERE key = ?",
                                 [(now, key) for key in self._used])
            self._used.clear()

    def evict(self) -> int:
        """Remove the least recently used answers until the cache is within its size (to 90%
        of it); returns how many were removed."""
        self._commit()
        self._since_check = 0
        pages, page_bytes = (self._db.execute(f"PRAGMA {name}").fetchone()[0]
                             for name in ("page_count", "page_size"))
        if pages * page_bytes <= self.max_bytes:
            return 0
        total = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM answers").fetchone()[0]
        if total <= self.max_bytes:
            return 0
        removed = 0
        target = int(self.max_bytes * 0.9)
        while total > target:
            oldest = self._db.execute("SELECT key, size FROM answers ORDER BY used LIMIT 1000"
                                      ).fetchall()
            if not oldest:
                break
            chosen = []
            for key, size in oldest:
                if total <= target:
                    break
                chosen.append((key,))
                total -= size
            self._db.executemany("DELETE FROM answers WHERE key = ?", chosen)
            removed += len(chosen)
        return removed

    def info(self) -> CacheInfo:
        """How many answers, and their bytes."""
        self._commit()
        count, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM answers").fetchone()
        return CacheInfo(self.path, int(count), int(size))

    def clear(self) -> int:
        """Remove every answer; returns how many there were."""
        self._commit()
        count = self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        self._db.execute("DELETE FROM answers")
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("VACUUM")
        return int(count)

    def close(self) -> None:
        """Commit what is pending, evict if too large, close."""
        with contextlib.suppress(sqlite3.Error):
            self._touch()
            self._commit()
            self.evict()
        self._db.close()
