"""Live progress: a one-line bar on a terminal, periodic log lines otherwise.

Rates are measured over a sliding window of recent ticks and the clock is injected, so the
figures (rows/s, tokens/s, ETA) are deterministic under test.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TextIO

from vbatch.engine.stats import RunStats, _duration

_WINDOW_S = 30.0
_BAR_WIDTH = 24


@dataclass(frozen=True)
class Snapshot:
    """Progress at one instant."""

    done: int
    total: int
    failed: int
    rows_per_s: float | None
    tokens_per_s: float | None
    eta_s: float | None


class Progress:
    """Tracks a run's progress from its :class:`RunStats` and renders it."""

    def __init__(
        self,
        stats: RunStats,
        stream: TextIO,
        *,
        mode: str = "bar",
        refresh_s: float = 0.25,
        log_interval_s: float = 10.0,
    ):
        if mode not in ("bar", "log", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.stats = stats
        self.stream = stream
        self.mode = mode
        self.refresh_s = refresh_s
        self.log_interval_s = log_interval_s
        self._samples: deque[tuple[float, int, int]] = deque()
        self._last_log: float | None = None

    def tick(self) -> Snapshot:
        """Record a sample now and return the current snapshot."""
        now = self.stats.clock()
        stats = self.stats
        self._samples.append((now, stats.done, stats.completion_tokens))
        while len(self._samples) > 2 and now - self._samples[1][0] >= _WINDOW_S:
            self._samples.popleft()
        first_t, first_done, first_tokens = self._samples[0]
        span = now - first_t
        rows_per_s = tokens_per_s = eta = None
        if span > 0:
            rows_per_s = (stats.done - first_done) / span
            tokens_per_s = (stats.completion_tokens - first_tokens) / span
        total = stats.total_rows
        done = stats.already_done + stats.done
        if rows_per_s:
            eta = max(0, total - done) / rows_per_s
        return Snapshot(done, total, stats.failed, rows_per_s, tokens_per_s, eta)

    @staticmethod
    def format(snapshot: Snapshot, bar: bool) -> str:
        """One line of progress text."""
        parts = []
        total = snapshot.total
        fraction = snapshot.done / total if total else 1.0
        if bar:
            filled = int(fraction * _BAR_WIDTH)
            parts.append("[" + "#" * filled + "." * (_BAR_WIDTH - filled) + "]")
        parts.append(f"{snapshot.done}/{total} rows ({fraction:.0%})")
        rate = "-" if snapshot.rows_per_s is None else f"{snapshot.rows_per_s:.1f}"
        tokens = "-" if snapshot.tokens_per_s is None else f"{snapshot.tokens_per_s:.0f}"
        parts.append(f"{rate} rows/s")
        parts.append(f"{tokens} tok/s")
        parts.append(f"{snapshot.failed} failed")
        eta = "-" if snapshot.eta_s is None else _duration(snapshot.eta_s)
        parts.append(f"ETA {eta}")
        return " | ".join(parts)

    def render(self) -> None:
        """Draw the bar, or write a log line when its interval has passed."""
        if self.mode == "quiet":
            return
        snapshot = self.tick()
        if self.mode == "bar":
            self.stream.write("\r\x1b[2K" + self.format(snapshot, bar=True))
            self.stream.flush()
            return
        now = self.stats.clock()
        if self._last_log is None or now - self._last_log >= self.log_interval_s:
            self._last_log = now
            self.stream.write("vbatch: " + self.format(snapshot, bar=False) + "\n")
            self.stream.flush()

    async def run(self) -> None:
        """Render periodically until cancelled."""
        while True:
            self.render()
            await asyncio.sleep(self.refresh_s)

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.mode == "quiet":
            return
        self._last_log = None
        self.render()
        if self.mode == "bar":
            self.stream.write("\n")
            self.stream.flush()
