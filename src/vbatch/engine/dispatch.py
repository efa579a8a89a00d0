"""The worker pool: ``concurrency`` workers pull requests from a bounded queue.

A feeder task fills the queue lazily from the row source, so the number of rows in memory
is bounded by the queue size plus the requests in flight, whatever the input's length.
Retryable failures (connection errors, timeouts, 408, 429, 5xx) are retried with
exponential backoff and jitter, honouring ``Retry-After``; anything else becomes a failed
record. Nothing a request does ends the run. When a managed server died, ``recover`` waits
for its restart and the request is sent again without using up a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar

from vbatch.defaults import DEFAULT_N
from vbatch.endpoints import EndpointKind
from vbatch.engine.backoff import backoff_delay
from vbatch.engine.breaker import CircuitBreaker
from vbatch.engine.concurrency import ConcurrencyLimit
from vbatch.engine.items import Pack, WorkItem
from vbatch.engine.lanes import CallQueue, Workers
from vbatch.engine.reuse import Reuse
from vbatch.errors import (
    ContextOverflowError,
    HTTPStatusError,
    InvalidOutputError,
    InvalidResponseError,
    RequestError,
    RunAbortedError,
    TransportError,
)
from vbatch.output.records import failed_record, invalid_record, ok_record, sent_record
from vbatch.prepare.fit import cut_by_context, parse_context_error
from vbatch.settings import SendPolicy
from vbatch.structured.answers import check_answer, greedy, reseeded

# Sends again after a server restart or to another endpoint do not use up retries; this
# bounds them for a row that itself brings servers down.
_MAX_RECOVERIES = 10


class Poster(Protocol):
    async def post_json(self, path: str, body: bytes) -> dict[str, Any]: ...


# What a request's answer is read into: one record, or a pack's records.
Answered = TypeVar("Answered")
RecordSink = Callable[[dict[str, Any]], None]


class Dispatcher:
    """Sends every work item under a concurrency bound and hands each record to ``sink``.

    Up to ``policy.pool_size`` workers run; with ``bound``, they also wait for a slot of that
    adjustable limit (adaptive concurrency). ``policy`` also says how often a request is
    retried, how long the servers may stay silent, the shutdown grace and whether a row the
    server refuses for its context is clamped.
    """

    def __init__(
        self,
        client: Poster,
        route: str,
        sink: RecordSink,
        kind: EndpointKind,
        policy: SendPolicy,
        *,
        n: int = DEFAULT_N,
        clock: Callable[[], float] = time.monotonic,
        recover: Callable[[], Awaitable[bool]] | None = None,
        context: int | None = None,
        bound: ConcurrencyLimit | None = None,
        breaker: CircuitBreaker | None = None,
        gate: Callable[[], Awaitable[None]] | None = None,
        reuse: Reuse | None = None,
        all_taken: asyncio.Event | None = None,
    ):
        self.client = client
        self.route = route
        self.sink = sink
        self.kind = kind
        self.n = n
        self.concurrency = policy.pool_size
        self.max_retries = policy.max_retries
        self.retry_base_delay = policy.retry_base_delay
        self.shutdown_grace = policy.shutdown_grace
        self.clock = clock
        self.recover = recover
        self.context = context
        self.clamp = policy.clamp
        self.bound = bound
        self.breaker = breaker
        self.max_downtime = policy.max_downtime
        self.gate = gate
        self.answers = policy.answers
        self.reuse = reuse
        # Set once workers have taken every row (what is left is in flight) or sending ended.
        self.all_taken = all_taken if all_taken is not None else asyncio.Event()
        self.down = False
        self._last_answer = clock()
        self.in_flight = 0
        self.requests_sent = 0  # every attempt counted (--max-requests)
        self.interrupted = False
        self._stop = asyncio.Event()
        self._abandon = asyncio.Event()
        self._queue = CallQueue(maxsize=2 * self.concurrency)
        self._replies: dict[int, asyncio.Future[dict[str, Any] | None]] = {}  # submit()'s
        self._workers = Workers(self._worker, self.concurrency)

    def abandon(self) -> None:
        """Stop at once: no new row, and the in-flight requests are given up (their rows get
        no record and run again on resume)."""
        self._stop.set()
        self._abandon.set()

    def stop(self) -> None:
        """Stop taking rows; in-flight requests get ``shutdown_grace`` seconds to finish.

        Called a second time, it abandons the in-flight requests at once.
        """
        if self._stop.is_set():
            self._abandon.set()
        self._stop.set()

    async def run(self, source: Iterable[WorkItem | Pack | dict[str, Any]]) -> None:
        """Send everything ``source`` yields; a dict is a ready record, written as it is."""
        await self._run(self._feed(source))

    async def run_driven(self, drive: Callable[[Callable[[WorkItem], Awaitable[
            dict[str, Any] | None]], RecordSink], Awaitable[None]]) -> None:
        """Send what ``drive(submit, emit)`` submits (a program's calls) until it returns;
        ``emit`` writes a record (a row's) as :meth:`run` writes a ready one."""
        async def feed() -> None:
            await drive(self.submit, self._emit)
            await self._close_queue()

        await self._run(feed())

    async def submit(self, item: WorkItem) -> dict[str, Any] | None:
        """Send ``item`` through the pool and return its record (not written: the caller
        uses it); None when sending stopped first."""
        reply: asyncio.Future[dict[str, Any] | None] = (
            asyncio.get_running_loop().create_future())
        self._replies[id(item)] = reply
        try:
            await self._put(item)
            return await reply
        finally:
            self._replies.pop(id(item), None)

    async def _run(self, feeding: Coroutine[Any, Any, None]) -> None:
        workers = self._workers.tasks
        feeder = asyncio.create_task(feeding)
        work: asyncio.Future[Any] = asyncio.create_task(self._workers.finish(feeder))
        stop_wait: asyncio.Future[Any] = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({work, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                work.result()
                if self.breaker is not None:
                    for record in self.breaker.release():
                        self.sink(record)
                return
            self.interrupted = True
            feeder.cancel()
            self._drain()
            for _ in workers:
                self._queue.put_nowait(None)
            # The workers alone: ``work`` is done as soon as the cancelled feeder is.
            sending: asyncio.Future[Any] = asyncio.gather(*workers, return_exceptions=True)
            abandon_wait: asyncio.Future[Any] = asyncio.create_task(self._abandon.wait())
            await asyncio.wait(
                {sending, abandon_wait},
                timeout=self.shutdown_grace,
                return_when=asyncio.FIRST_COMPLETED,
            )
            abandon_wait.cancel()
        finally:
            self.all_taken.set()
            stop_wait.cancel()
            for task in (feeder, *workers):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(work, return_exceptions=True)

    @property
    def workers(self) -> int:
        """How many workers were made (at most ``concurrency``: as the work needed them)."""
        return len(self._workers.tasks)

    @property
    def aborted(self) -> bool:
        """Whether sending stopped because no server answered or every request failed."""
        return self.down or (self.breaker is not None and self.breaker.tripped)

    def raise_if_aborted(self) -> None:
        """Raise RunAbortedError, saying why and what to do, when sending was aborted."""
        if self.down:
            raise RunAbortedError(
                f"no server answered for {self.max_downtime:g} s (--max-downtime), so vbatch "
                "stopped sending. Once the server is back, run the same command again: the "
                "rows not recorded will be sent then."
            )
        if self.breaker is not None:
            self.breaker.raise_if_tripped()

    def _drain(self) -> None:
        while not self._queue.empty():
            item = self._queue.get_nowait()
            reply = self._replies.get(id(item))
            if reply is not None and not reply.done():
                reply.set_result(None)

    async def _feed(self, source: Iterable[WorkItem | Pack | dict[str, Any]]) -> None:
        for item in source:
            if isinstance(item, dict):
                self.sink(item)
            else:
                await self._put(item)
        await self._close_queue()

    async def _put(self, item: WorkItem | Pack) -> None:
        """Queue ``item``, with a new worker when no idle one is left for it: workers are
        made as the work needs them (at most ``concurrency``), so a large bound costs memory
        only once it is used."""
        await self._queue.put(item)
        self._workers.grow(self._queue.qsize())

    async def _close_queue(self) -> None:
        for _ in self._workers.tasks:
            await self._queue.put(None)

    async def _worker(self) -> None:
        queue = self._queue
        bound = self.bound
        gate = self.gate
        while True:
            self._workers.idle += 1
            if gate is not None:
                await gate()
            item = await queue.get()
            self._workers.idle -= 1
            if item is None:
                self.all_taken.set()
                return
            if bound is not None:
                await bound.acquire()
            reply = self._replies.get(id(item))
            if self._stop.is_set():
                # Taken before the stop, not sent: it has no record and runs on resume.
                if bound is not None:
                    bound.release()
                if reply is not None and not reply.done():
                    reply.set_result(None)
                return
            self.in_flight += 1
            try:
                if isinstance(item, Pack):
                    records = await self.send_pack(item) or []
                else:
                    record = await (self.reuse.send(item, self.send) if self.reuse is not None
                                    else self.send(item))
                    records = [record] if record is not None else []
            finally:
                self.in_flight -= 1
                if bound is not None:
                    bound.release()
            if reply is not None:
                if not reply.done():
                    reply.set_result(records[0] if records else None)
                await asyncio.sleep(0)  # the caller may queue its next call before we take one
                continue
            for record in records:
                self._emit(record)

    def _emit(self, record: dict[str, Any]) -> None:
        breaker = self.breaker
        if breaker is None:
            self.sink(record)
            return
        was_tripped = breaker.tripped
        for ready in breaker.admit(record):
            self.sink(ready)
        if breaker.tripped and not was_tripped:
            self.stop()

    async def send(self, item: WorkItem) -> dict[str, Any] | None:
        """Send one item, retrying what can be retried; returns its record, or None when no
        server has answered for ``max_downtime`` seconds (the run stops; no record)."""
        start = self.clock()
        invalid: dict[str, int] = {}

        def read(response: dict[str, Any]) -> dict[str, Any]:
            record = ok_record(item.row_id, item.index, response, item.kind or self.kind,
                               item.n or self.n)
            if cut_by_context(record, self.context, item.max_tokens):
                record["context_truncated"] = True
            if item.spec is not None:
                try:
                    check_answer(record, item.spec, self.answers, item.max_tokens)
                except InvalidOutputError as exc:
                    invalid[exc.reason] = invalid.get(exc.reason, 0) + 1
                    raise
            return record

        outcome, attempts = await self._post(item, read)
        if outcome is None:
            return None
        if invalid:
            item.fields = {**(item.fields or {}), "invalid_answers": invalid}
        if isinstance(outcome, InvalidOutputError):
            record = invalid_record(item.row_id, item.index, outcome, attempts)
        elif isinstance(outcome, RequestError):
            record = failed_record(item.row_id, item.index, outcome)
        else:
            record = outcome
        return sent_record(record, attempts, round(self.clock() - start, 4), item.fields)

    async def send_pack(self, pack: Pack) -> list[dict[str, Any]] | None:
        """Send a pack of pooling rows as one request; each row gets its own record. A pack
        the server refuses (a 4xx, or an answer that cannot be read) is sent again row by
        row, so that only the row at fault fails, with the server's reason."""
        start = self.clock()

        def read(response: dict[str, Any]) -> list[dict[str, Any]]:
            return [ok_record(item.row_id, item.index, answer, self.kind, self.n)
                    for item, answer in zip(pack.items, pack.answers(response), strict=True)]

        outcome, attempts = await self._post(pack, read)
        if outcome is None:
            return None
        if isinstance(outcome, InvalidResponseError) or (
                isinstance(outcome, HTTPStatusError) and not outcome.retryable):
            singles = [await self.send(item) for item in pack.items]
            return [record for record in singles if record is not None]
        if isinstance(outcome, RequestError):
            records = [failed_record(item.row_id, item.index, outcome) for item in pack.items]
        else:
            records = outcome
        latency = round(self.clock() - start, 4)
        return [sent_record(record, attempts, latency, item.fields)
                for record, item in zip(records, pack.items, strict=True)]

    async def _post(self, item: WorkItem | Pack, read: Callable[[dict[str, Any]], Answered]
                    ) -> tuple[Answered | RequestError | None, int]:
        """POST ``item``'s body until it is answered or cannot be: what ``read`` makes of the
        answer, or the final error (a context error after one refit), with the attempts made;
        None when no server has answered for ``max_downtime`` seconds."""
        attempts = retries = recoveries = invalid = 0
        refitted = False
        while True:
            attempts += 1
            self.requests_sent += 1
            try:
                response = await self.client.post_json(item.route or self.route, item.body)
                self._last_answer = self.clock()
                return read(response), attempts
            except InvalidOutputError as exc:
                if (invalid >= self.answers.max_invalid_retries or not isinstance(item, WorkItem)
                        or greedy(item.body)):
                    return exc, attempts
                invalid += 1
                item.body = reseeded(item.body, invalid)
            except RequestError as exc:
                if (isinstance(exc, TransportError) and self.recover
                        and recoveries < _MAX_RECOVERIES and await self.recover()):
                    recoveries += 1
                    continue
                if not isinstance(exc, TransportError):
                    self._last_answer = self.clock()
                elif self._down_too_long():
                    return None, attempts
                overflow = parse_context_error(exc) if isinstance(exc, HTTPStatusError) else None
                if overflow is not None and isinstance(item, WorkItem):
                    if not refitted and self.clamp and item.refit(overflow, self.context):
                        refitted = True
                        continue
                    message = f"the server refused the row's context: {exc}"
                    return ContextOverflowError(message, exc.status_code), attempts
                if exc.retryable and retries < self.max_retries:
                    retries += 1
                    await asyncio.sleep(
                        backoff_delay(retries, self.retry_base_delay, exc.retry_after)
                    )
                    continue
                return exc, attempts

    def _down_too_long(self) -> bool:
        """Whether no server has answered for ``max_downtime`` seconds; then stop the run."""
        if self.clock() - self._last_answer < self.max_downtime:
            return False
        if not self.down:
            self.down = True
            self.stop()
        return True
