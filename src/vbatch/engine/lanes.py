"""The dispatcher's queue: first in, first out, but for the items marked ``urgent`` (a program
row's calls after its first), which go ahead of the others, first in, first out among
themselves. A row that has begun is finished before new rows begin: its later calls do not
wait behind the first calls of every row started after it, so rows end (and their records are
written, their memory freed) sooner, and the last calls of a run are not all left to its end.
"""

from __future__ import annotations

import asyncio
from collections import deque

from vbatch.engine.items import Pack, WorkItem

__all__ = ["CallQueue"]

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
