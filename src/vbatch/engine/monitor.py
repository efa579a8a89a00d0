"""The servers' load, polled once a second and shared: the adaptive controller, the live view
and the timeline read the same samples, so ``/metrics`` is fetched once per second at most."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from vbatch.transport.metrics import ServerLoad

__all__ = ["LoadMonitor"]

# Seconds of samples the generation rate is measured over.
RATE_WINDOW_S = 10.0


class LoadMonitor:
    """Polls ``poll`` (the pool's summed load) at most every ``interval`` seconds."""

    def __init__(self, poll: Callable[[], Awaitable[ServerLoad | None]],
                 clock: Callable[[], float], interval: float = 1.0):
        self._poll = poll
        self._clock = clock
        self.interval = interval
        self.latest: ServerLoad | None = None
        self._polled_at: float | None = None
        self._polling: asyncio.Future[ServerLoad | None] | None = None
        self._counters: deque[tuple[float, float]] = deque()

    async def load(self, fresh: bool = False) -> ServerLoad | None:
        """The load now: polled again once the last poll is ``interval`` old (at once with
        ``fresh``); a caller that comes while a poll is on its way waits for it."""
        if self._polling is not None:
            return await asyncio.shield(self._polling)
        now = self._clock()
        if (not fresh and self._polled_at is not None
                and now - self._polled_at < 0.9 * self.interval):
            return self.latest
        self._polled_at = now
        self._polling = asyncio.ensure_future(self._poll())
        try:
            self.latest = await asyncio.shield(self._polling)
        finally:
            self._polling = None
        generated = self.latest.generation_tokens if self.latest is not None else None
        if generated is not None:
            self._counters.append((now, generated))
            while len(self._counters) > 2 and now - self._counters[1][0] >= RATE_WINDOW_S:
                self._counters.popleft()
        return self.latest

    def generation_rate(self) -> float | None:
        """Tokens/s the servers generated over the last seconds (their counter), while long
        requests are still running; None before two samples."""
        if len(self._counters) < 2:
            return None
        (first_t, first), (last_t, last) = self._counters[0], self._counters[-1]
        if last_t <= first_t:
            return None
        return max(0.0, last - first) / (last_t - first_t)
