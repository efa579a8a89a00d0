"""A run's budget watched while it sends (:class:`~vbatch.budget.Budget` says what it is)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from vbatch.budget import Budget
from vbatch.engine.stats import RunStats

__all__ = ["BudgetGuard"]

# Seconds between two checks of the time limit.
_WATCH_S = 0.1


class BudgetGuard:
    """Watches a run's budget: :meth:`gate` (awaited by each worker before it takes a row)
    and :meth:`watch` (a background task, for the time limit while requests take long) stop
    sending once it is spent; ``reason`` then says which."""

    def __init__(self, budget: Budget, stats: RunStats, clock: Callable[[], float],
                 started: float, requests: Callable[[], int], stop: Callable[[], None],
                 inner: Callable[[], Awaitable[None]] | None = None):
        self.budget = budget
        self.stats = stats
        self.clock = clock
        self.started = started
        self.requests = requests
        self.stop = stop
        self.inner = inner
        self.reason: str | None = None

    def check(self) -> str | None:
        """The spent budget's name (and stop sending), else None."""
        if self.reason is None:
            stats = self.stats
            tail = stats.latency.quantile(0.95) or 0.0
            self.reason = self.budget.reached(self.clock() - self.started, tail,
                                              stats.prompt_tokens, stats.completion_tokens,
                                              self.requests())
            if self.reason is not None:
                self.stop()
        return self.reason

    async def gate(self) -> None:
        """Before a worker takes a row: check the budget, then the caller's own gate."""
        self.check()
        if self.inner is not None:
            await self.inner()

    async def watch(self, every_s: float = _WATCH_S) -> None:
        """Check the budget every ``every_s`` seconds until it is spent."""
        while self.check() is None:
            await asyncio.sleep(every_s)

    def describe(self) -> str | None:
        """The budget used and when it runs out, for the live view."""
        stats = self.stats
        elapsed = self.clock() - self.started
        rate = stats.completion_tokens / stats.elapsed if stats.elapsed else None
        return self.budget.describe(elapsed, stats.prompt_tokens, stats.completion_tokens,
                                    self.requests(), rate)
