"""``OUTPUT.timeline.jsonl``: what the run looked like, second by second, for ``vbatch report``.

Each run appends a segment: a header line ``{"segment": N, "started": <epoch s>, "rows_total",
"already_done"}`` (a resumed run starts segment N + 1), then one sample per second — every 10 s
after an hour, every minute after ten hours, so a week-long run stays a few megabytes:

``{"t": <s since the segment started>, "rows_done", "ok", "failed", "failures": {kind: count},
"in_flight", "bound", "prompt_tokens", "completion_tokens", "servers": [{"url", "running",
"waiting", "kv_usage", "preemptions", "prompt_tokens", "generation_tokens", "prefix_queries",
"prefix_hits"}]}`` (the fields of :class:`~vbatch.transport.metrics.ServerLoad`)

Server figures are vLLM's ``/metrics`` (counters since the server started; null where a server
has none). Sampling runs on a timer, never per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import IO, Any

import orjson

from vbatch.engine.monitor import LoadMonitor
from vbatch.engine.stats import RunStats
from vbatch.transport.metrics import ServerLoad
from vbatch.transport.pool import ServerConnection

__all__ = ["TIMELINE_SUFFIX", "Timeline", "sample_interval", "timeline_path"]

TIMELINE_SUFFIX = ".timeline.jsonl"
_SEGMENT = b'{"segment":'


def timeline_path(output: Path) -> Path:
    """The timeline of the output the user named."""
    return output.with_name(output.name + TIMELINE_SUFFIX)


def sample_interval(age_s: float) -> float:
    """Seconds between samples, ``age_s`` into a segment."""
    return 1.0 if age_s < 3600 else 10.0 if age_s < 36_000 else 60.0


def _server(server: ServerConnection) -> dict[str, Any]:
    """A server's figures: every field of its last :class:`ServerLoad` (null before one)."""
    load = server.load
    if load is None:
        return {"url": server.url, **dict.fromkeys(f.name for f in fields(ServerLoad))}
    return {"url": server.url, **asdict(load)}


class Timeline:
    """Appends one segment of samples to ``path``. A Ray run's driver has no servers of its
    own to sample (``monitor`` None, no ``servers``) nor requests in flight (None)."""

    def __init__(self, path: Path, stats: RunStats, monitor: LoadMonitor | None,
                 servers: list[ServerConnection], in_flight: Callable[[], int | None],
                 bound: Callable[[], int | None], say: Callable[[str], None],
                 wall: Callable[[], float] = time.time):
        self.path = path
        self.stats = stats
        self.monitor = monitor
        self.servers = servers
        self.in_flight = in_flight
        self.bound = bound
        self.say = say
        self.wall = wall
        self._file: IO[bytes] | None = None

    def open(self) -> None:
        """Start the segment (after the ones the file has); a timeline that cannot be
        written is said and left out."""
        if self.path.is_symlink():
            self.say(f"no timeline: {self.path} is a symbolic link, not vbatch's timeline; "
                     "it was not changed (remove it to keep a timeline)")
            return
        try:
            earlier = self.path.read_bytes() if self.path.exists() else b""
            if earlier and not earlier.startswith(_SEGMENT):
                self.say(f"no timeline: {self.path} is not a vbatch timeline; it was not "
                         "changed (move it away to keep a timeline)")
                return
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
            self._file = os.fdopen(os.open(self.path, flags, 0o644), "ab")
        except OSError as exc:
            self.say(f"no timeline: cannot write {self.path} ({exc.strerror})")
            return
        segments = earlier.count(b"\n" + _SEGMENT) + earlier.startswith(_SEGMENT)
        self._write({"segment": segments + 1, "started": round(self.wall(), 3),
                     "rows_total": self.stats.total_rows,
                     "already_done": self.stats.already_done})

    def sample(self) -> dict[str, Any]:
        """The run now."""
        stats = self.stats
        return {
            "t": round(stats.elapsed, 3),
            "rows_done": stats.already_done + stats.done,
            "ok": stats.ok,
            "failed": stats.failed,
            "failures": stats.failure_counts(),
            "in_flight": self.in_flight(),
            "bound": self.bound(),
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "servers": [_server(server) for server in self.servers],
        }

    async def run(self) -> None:
        """Sample on a timer until cancelled."""
        while True:
            if self.monitor is not None:
                await self.monitor.load()
            self._write(self.sample())
            await asyncio.sleep(sample_interval(self.stats.elapsed))

    def close(self) -> None:
        """The last sample, then close."""
        self._write(self.sample())
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def _write(self, line: dict[str, Any]) -> None:
        """Append ``line``; the timeline stops (said once) when it cannot be written: the
        records matter, the timeline does not."""
        if self._file is None:
            return
        try:
            self._file.write(orjson.dumps(line) + b"\n")
            self._file.flush()
        except OSError as exc:
            self.say(f"the timeline {self.path} stops here: {exc.strerror}")
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
