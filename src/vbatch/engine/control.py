"""A handle on a run from outside it: each record as it is written, and a stop that is safe
to call from another thread (a notebook's Ctrl-C lands in the main thread while the run
goes on in its own)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["RunControl"]


class RunControl:
    """Given to :func:`vbatch.arun`: ``on_record`` sees every record the run writes (on the
    run's event loop), and no new row is sent until ``ready`` returns (the one who takes the
    records can hold the run back); :meth:`stop` stops the run as SIGINT does."""

    def __init__(self, on_record: Callable[[dict[str, Any]], None] | None = None,
                 ready: Callable[[], Awaitable[None]] | None = None):
        self.on_record = on_record
        self.ready = ready
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._stop_sending: Callable[[], None] | None = None
        self.stopped = False

    def bind(self, task: asyncio.Task[Any]) -> None:
        """The run's task, cancelled by a stop that comes before sending starts."""
        self._loop = task.get_loop()
        self._task = task

    def sending(self, stop: Callable[[], None]) -> None:
        """Sending has started (on the running loop); ``stop`` stops it gracefully."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._stop_sending = stop
        if self.stopped:
            stop()

    def stop(self) -> None:
        """Stop the run: no new rows; in-flight ones get the shutdown grace (a second call
        abandons them). Before sending starts, the run is cancelled."""
        if self._loop is None:
            self.stopped = True
            return
        self._loop.call_soon_threadsafe(self._stop_on_loop)

    def _stop_on_loop(self) -> None:
        self.stopped = True
        if self._stop_sending is not None:
            self._stop_sending()
        elif self._task is not None:
            self._task.cancel()
