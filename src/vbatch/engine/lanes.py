"""The dispatcher's queue and its workers.

The queue is first in, first out, but for the items marked ``urgent`` (a program row's calls
after its first), which go ahead of the others, first in, first out among themselves. A row
that has begun is finished before new rows begin: its later calls do not wait behind the first
calls of every row started after it, so rows end (and their records are written, their memory
freed) sooner, and the last calls of a run are not all left to its end.

Workers are made as the work needs them, so a large bound costs memory only once it is used.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from vbatch.engine.items import Pack, WorkItem

__all__ = ["CallQueue", "Workers"]

Queued = WorkItem | Pack | None


class CallQueue(asyncio.Queue[Queued]):
    """A bounded queue of work items (``None``: a worker's signal to stop) in which urgent
    items go first."""

    def _init(self, maxsize: int) -> None:
        self._queue: deque[Queued] = deque()
        self._urgent = 0  # the urgent items, at the front

    def _put(self, item: Queued) -> None:
        if isinstance(item, WorkItem) and item.urgent:
            self._queue.insert(self._urgent, item)
            self._urgent += 1
        else:
            self._queue.append(item)

    def _get(self) -> Queued:
        if self._urgent:
            self._urgent -= 1
        return self._queue.popleft()


class Workers:
    """The tasks running ``work``, made one at a time by :meth:`grow`, at most ``most``."""

    def __init__(self, work: Callable[[], Coroutine[Any, Any, None]], most: int):
        self._work = work
        self.most = most
        self.tasks: list[asyncio.Task[None]] = []
        self.idle = 0  # workers waiting for an item
        self._error: BaseException | None = None
        self._crashed = asyncio.Event()

    def grow(self, waiting: int) -> None:
        """A new worker when more items wait (``waiting``) than workers are idle."""
        if waiting > self.idle and len(self.tasks) < self.most:
            task = asyncio.create_task(self._work())
            task.add_done_callback(self._ended)
            self.tasks.append(task)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self._error is None:
            self._error = task.exception()
            self._crashed.set()

    async def finish(self, feeder: asyncio.Task[None]) -> None:
        """Once ``feeder`` is done, wait for every worker; the first exception of the feeder
        or of a worker is raised at once (a worker that fails does not leave the feeder
        waiting for room in the queue forever)."""
        crashed = asyncio.ensure_future(self._crashed.wait())
        try:
            await asyncio.wait({feeder, crashed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            crashed.cancel()
        if self._error is not None:
            raise self._error
        feeder.result()
        await asyncio.gather(*self.tasks)
