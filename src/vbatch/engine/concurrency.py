"""Adaptive concurrency: as many requests in flight as keep the server's batch full.

The controller reads vLLM's Prometheus ``/metrics`` about once a second and steers an
adjustable bound on vbatch's in-flight requests:

- **back off** when the server preempts requests (its KV cache ran out under running
  sequences, which then are recomputed): the bound drops to 90% of what is running and is
  held there for 5 seconds;
- **hold a small queue** once requests wait or the KV cache is full: the bound becomes
  ``running + target queue``, with a target of ``max(4, 10% of running)`` waiting requests,
  so a finished sequence is replaced at once and the batch never runs dry, without piling
  requests up in the server's queue. ``running`` is the most the server ran over its last
  three reports (at least 3 seconds, at most 30): a sample taken while finished sequences
  were being replaced does not shrink the bound, a server that really runs fewer does after
  those reports. A slow engine (a CPU, a large model) updates its gauges once a step, every
  few seconds: there three samples of one second would be one report, and a wave of
  finished sequences, replaced at the next step, would cut the bound to what was left;
- **slow start** while the server has no queue, vbatch uses its whole bound and the server
  has taken in what vbatch sent (running + waiting reaches 90% of vbatch's in-flight
  requests; requests still being received or tokenized are not in either gauge yet): the
  bound grows by half each step (the server could take more).

The bound stays within ``[minimum, maximum]`` (``--max-concurrency``). Without ``/metrics``
(a server other than vLLM) it stays at ``maximum``: a fixed bound, as for a pooling run (see
``Job._controller``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from vbatch.defaults import DEFAULT_MAX_CONCURRENCY
from vbatch.transport.metrics import ServerLoad

RUNNING_WINDOW_S = 3.0
RUNNING_WINDOW_MAX_S = 30.0
# Reports of the server ``running`` is the most of (see the module's doc).
RUNNING_REPORTS = 3


class ConcurrencyLimit:
    """A bound on requests in flight that can be changed while requests wait for it."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def set(self, limit: int) -> None:
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            future = self._waiters.popleft()
            if not future.done():
                self.in_flight += 1
                future.set_result(None)


def _queue_target(running: float) -> int:
    """How many requests to keep waiting on a server that runs ``running``."""
    return max(4, math.ceil(0.1 * running))


@dataclass(frozen=True)
class Sample:
    """One step of the controller, for traces and plots."""

    t: float
    limit: int
    in_flight: int
    running: float
    waiting: float
    done: int


class AdaptiveController:
    """Steers a :class:`ConcurrencyLimit` from the server's load (see the module's doc)."""

    def __init__(
        self,
        bound: ConcurrencyLimit,
        *,
        minimum: int = 4,
        maximum: int = DEFAULT_MAX_CONCURRENCY,
        clock: Callable[[], float] = time.monotonic,
        done: Callable[[], int] = lambda: 0,
        trace_size: int = 3600,
    ):
        self.bound = bound
        self.minimum = minimum
        self.maximum = maximum
        self.clock = clock
        self.done = done
        self.trace: deque[Sample] = deque(maxlen=trace_size)
        self._preemptions: float | None = None
        self._hold_until = 0.0
        self._recent_running: deque[tuple[float, float]] = deque()
        self._last_report: tuple[float | None, ...] = ()
        self._report_times: deque[float] = deque(maxlen=RUNNING_REPORTS + 1)

    def _bounded(self, value: float) -> int:
        return max(self.minimum, min(self.maximum, int(value)))

    def update(self, load: ServerLoad) -> int:
        """One control step; returns the new bound."""
        now = self.clock()
        current = self.bound.limit
        preempted = (
            load.preemptions is not None
            and self._preemptions is not None
            and load.preemptions > self._preemptions
        )
        self._preemptions = load.preemptions
        kv_full = load.kv_usage is not None and load.kv_usage >= 0.98
        running = self._running_lately(now, load)
        if preempted:
            new = self._bounded(0.9 * load.running)
            self._hold_until = now + 5.0
        elif now < self._hold_until:
            new = current
        elif load.waiting > 0 or kv_full:
            new = self._bounded(running + _queue_target(running))
        elif self.bound.in_flight >= 0.9 * current and (
            load.running + load.waiting >= 0.9 * self.bound.in_flight
        ):
            new = self._bounded(max(current * 1.5, current + _queue_target(load.running)))
        else:
            new = current
        self.bound.set(new)
        self.trace.append(
            Sample(now, new, self.bound.in_flight, load.running, load.waiting, self.done())
        )
        return new

    def _running_lately(self, now: float, load: ServerLoad) -> float:
        report = (load.running, load.waiting, load.prompt_tokens, load.generation_tokens)
        times = self._report_times
        if report != self._last_report:
            self._last_report = report
            times.append(now)
        window = RUNNING_WINDOW_S
        if len(times) > 1:
            between = (times[-1] - times[0]) / (len(times) - 1)
            window = min(RUNNING_WINDOW_MAX_S, max(window, RUNNING_REPORTS * between))
        recent = self._recent_running
        recent.append((now, load.running))
        while recent[0][0] < now - window:
            recent.popleft()
        return max(value for _, value in recent)

    async def run(self, fetch: Callable[[], Awaitable[ServerLoad | None]], interval: float = 1.0
                  ) -> None:
        """Read the load with ``fetch`` and steer until cancelled; a fixed bound without it."""
        misses = 0
        seen = False
        while True:
            load = await fetch()
            if load is not None:
                seen = True
                self.update(load)
            elif not seen:
                misses += 1
                if misses >= 3:
                    self.bound.set(self.maximum)
                    return
            await asyncio.sleep(interval)
