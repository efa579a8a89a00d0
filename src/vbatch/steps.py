"""One :class:`Run`: the steps of every run, written once, for the CLI, the Python API, the Ray
driver and the Ray worker: resolve the model, check (count the rows, size the context), start
or connect, send, finish.

A single-process run takes them all (:meth:`Run.execute`); the Ray driver resolves and checks,
then hands shards to workers; each worker resolves and starts its servers once, then sends
each shard it is handed. The backend (:func:`~vbatch.servers.factory.make_backend`) gives
facts: the model, what counts the rows, the context, the started servers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TextIO

from vbatch.engine.control import RunControl
from vbatch.engine.job import Job
from vbatch.engine.result import RunResult
from vbatch.prepare.builder import RequestBuilder
from vbatch.prepare.factory import request_builder
from vbatch.prepare.probe import model_identity, prepare_structured
from vbatch.programs.setup import program_driver
from vbatch.servers.backend import Replica, Started
from vbatch.servers.factory import make_backend
from vbatch.settings import OutputPaths, RunSettings
from vbatch.source.shards import Shard
from vbatch.transport.base import Transport

__all__ = ["Run"]


class Run:
    """The steps of a run of ``settings``; ``report`` says whether its jobs finish the output
    the user named (a Ray worker's shard jobs do not)."""

    def __init__(self, settings: RunSettings, stream: TextIO, clock: Callable[[], float], *,
                 transport: Transport | None = None, control: RunControl | None = None,
                 started: float | None = None, request_model: str | None = None,
                 report: bool = True):
        self.settings = settings
        self.stream = stream
        self.clock = clock
        self.control = control
        self.report = report
        self.started = clock() if started is None else started
        self.backend = make_backend(settings, stream, transport)
        self._request_model = request_model
        self._builder: RequestBuilder | None = None
        self._structured_ready = False

    @property
    def builder(self) -> RequestBuilder:
        """How rows become requests, once :meth:`resolve` found the model."""
        assert self._builder is not None, "resolve() first"
        return self._builder

    async def resolve(self, stack: contextlib.AsyncExitStack) -> None:
        """Find the model (and, for running servers, open the connections)."""
        await self.backend.resolve(stack)
        model = self._request_model or self.backend.request_model
        self._builder = request_builder(self.settings, model)

    def job(self, shard: Shard | None = None, paths: OutputPaths | None = None) -> Job:
        """A job over the input (over one ``shard``, writing to ``paths``)."""
        job = Job(self.settings, self.builder, self.stream, self.clock, shard=shard,
                  paths=paths, control=self.control, started=self.started,
                  report=self.report)
        job.phases["setup"] = self.clock() - self.started
        return job

    async def check(self, job: Job) -> int | None:
        """Check and count the job's input (rows the builder cannot count are not: no
        tokenizer is loaded for them); returns the context the rows are fitted to."""
        started = self.clock()
        counter = await self.backend.counter(job.say) if self.builder.countable else None
        await job.prepare(counter)
        pending = job.pending
        context = self.backend.context(pending.prompt_tokens, pending.max_tokens, job.say)
        job.set_context(context)
        job.phases["check"] = self.clock() - started
        return context

    async def start(self, stack: contextlib.AsyncExitStack, context: int | None,
                    replica: Replica | None = None, job: Job | None = None) -> Started:
        """Start the servers (or connect), their seconds kept as ``job``'s "server start"."""
        started = self.clock()
        try:
            return await self.backend.start(stack, context, replica)
        finally:
            if job is not None:
                job.phases["server start"] = self.clock() - started

    async def check_and_start(self, stack: contextlib.AsyncExitStack, job: Job) -> Started:
        """Check the input and start the servers: at the same time when the context is known
        before the rows are counted, else one after the other."""
        known = self.backend.known_context
        if known is None:
            return await self.start(stack, await self.check(job), job=job)
        starting = asyncio.create_task(self.start(stack, known, job=job))
        try:
            await self.check(job)
        except BaseException:
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            raise
        return await starting

    async def send(self, job: Job, started: Started, handle_signals: bool) -> RunResult:
        """Send every row of ``job`` not yet recorded, write the records, finish. The first
        send of a structured run asks the server which form it takes and whether it can use
        the run's spec."""
        if not self._structured_ready:
            await prepare_structured(self.builder, started.pool.first, job.say)
            self._structured_ready = True
        if self.settings.options.cache_dir is not None:
            job.model_identity = await model_identity(started.pool.first, self.builder.model)
        return await job.execute(started.pool, handle_signals, started.recover,
                                 program_driver(job))

    async def execute(self, handle_signals: bool) -> RunResult:
        """Every step, in one process."""
        async with contextlib.AsyncExitStack() as stack:
            await self.resolve(stack)
            job = self.job()
            started = await self.check_and_start(stack, job)
            return await self.send(job, started, handle_signals)
