"""Answers reused instead of sent (``--cache-dir``): a deterministic request (greedy, or with a
seed) whose answer the cache holds is not sent; identical deterministic requests of one run
are sent once, the others wait for its answer. A reused record says ``"cached": true`` and
``"attempts": 0``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from itertools import islice
from typing import Any

import orjson

from vbatch.cache.store import LOOKUP_BATCH, ResponseCache, cache_key, deterministic
from vbatch.engine.items import Pack, WorkItem

__all__ = ["Reuse"]

# Fields of a record that are the row's or the run's, not the answer's.
_NOT_THE_ANSWER = ("id", "index", "attempts", "latency_s", "request_hash", "clamped_max_tokens",
                   "invalid_answers", "cached")
Send = Callable[[WorkItem], Awaitable[dict[str, Any] | None]]


class Reuse:
    """Reuses the answers of ``cache`` for the model whose identity is ``model`` (its name and
    what its server says of it), requests to ``route`` unless an item names its own."""

    def __init__(self, cache: ResponseCache, model: str, route: str):
        self.cache = cache
        self.model = model
        self.route = route
        self._answering: dict[bytes, asyncio.Future[dict[str, Any] | None]] = {}

    def key_of(self, item: WorkItem) -> bytes:
        """The cache key of ``item`` (kept on it), ``b""`` when its answer is not the same
        each time."""
        key = item.reuse_key
        if key is None:
            same = item.deterministic
            if same is None:
                same = deterministic(orjson.loads(item.body))
            key = item.reuse_key = (
                cache_key(self.model, item.route or self.route, item.body) if same else b"")
        return key

    def ready(self, source: Iterable[WorkItem | Pack | dict[str, Any]]
              ) -> Iterator[WorkItem | Pack | dict[str, Any]]:
        """``source``, each work item whose answer the cache holds given as its reused record
        (so that it is written at once, without a worker). Looked up :data:`LOOKUP_BATCH`
        items at a time, in one query each."""
        items = iter(source)
        while chunk := list(islice(items, LOOKUP_BATCH)):
            keys = [self.key_of(item) for item in chunk if isinstance(item, WorkItem)]
            stored = self.cache.get_many([key for key in keys if key])
            for item in chunk:
                if (isinstance(item, WorkItem)
                        and (answer := stored.get(item.reuse_key or b"")) is not None):
                    yield _reused(item, answer)
                else:
                    yield item

    async def send(self, item: WorkItem, send: Send) -> dict[str, Any] | None:
        """``item``'s record: reused, waited for, or sent with ``send`` (and then kept)."""
        key = self.key_of(item)
        if not key:
            return await send(item)
        # Looked up again: an identical request of this run may have been answered since.
        stored = self.cache.get(key)
        if stored is not None:
            return _reused(item, stored)
        waiting = self._answering.get(key)
        if waiting is not None:
            answer = await asyncio.shield(waiting)
            return _reused(item, answer) if answer is not None else await send(item)
        future: asyncio.Future[dict[str, Any] | None] = (
            asyncio.get_running_loop().create_future())
        self._answering[key] = future
        answer = None
        try:
            record = await send(item)
            if record is not None and record.get("status") == "ok":
                answer = {k: v for k, v in record.items() if k not in _NOT_THE_ANSWER
                          and k not in (item.fields or {})}
                self.cache.put(key, answer)
            return record
        finally:
            del self._answering[key]
            future.set_result(answer)


def _reused(item: WorkItem, answer: dict[str, Any]) -> dict[str, Any]:
    record = {"id": item.row_id, "index": item.index, **answer, "cached": True, "attempts": 0,
              "latency_s": 0.0}
    if item.fields:
        record.update(item.fields)
    return record
