"""Running a coroutine to the end from plain code: on uvloop when installed, and in a thread of
its own when the caller's thread already runs an event loop (a notebook cell)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["event_loop_runner", "in_own_thread", "loop_is_running"]


def event_loop_runner() -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """``uvloop.run`` when uvloop is installed, else ``asyncio.run``."""
    with contextlib.suppress(ImportError):
        import uvloop

        runner: Callable[[Coroutine[Any, Any, Any]], Any] = uvloop.run
        return runner
    return asyncio.run


def loop_is_running() -> bool:
    """Whether this thread runs an event loop now."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def in_own_thread(make: Callable[[], Coroutine[Any, Any, Any]],
                  on_interrupt: Callable[[], None]) -> tuple[Any, BaseException | None, bool]:
    """Run ``make()`` on a new event loop in a new thread and wait for it; a Ctrl-C meanwhile
    calls ``on_interrupt`` (which should make the coroutine end soon) and waiting goes on.

    Returns ``(value, error, interrupted)``: what the coroutine returned or raised, and
    whether Ctrl-C was pressed.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = event_loop_runner()(make())
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="vbatch-run", daemon=True)
    thread.start()
    interrupted = False
    while thread.is_alive():
        try:
            thread.join(0.2)
        except KeyboardInterrupt:
            interrupted = True
            on_interrupt()
    return outcome.get("value"), outcome.get("error"), interrupted
