"""Where a run's requests go, decided once: running servers, or vLLM servers vbatch starts.

A :class:`Backend` finds the model, gives the token counter that fits rows to its context,
and starts what it must (nothing, for running servers: as datatrove's endpoint server).
:func:`~vbatch.servers.factory.make_backend` is the one place that chooses; the runner and
the Ray driver and workers all go through it.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from vbatch.config import RunConfig
from vbatch.prepare.tokens import TokenCounter
from vbatch.transport.base import Transport
from vbatch.transport.pool import ServerPool

if TYPE_CHECKING:
    from vbatch.engine.job import Job

__all__ = ["Backend", "Recover", "Replica", "Started"]

Recover = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class Replica:
    """One Ray worker's share of a node: worker ``index`` of ``per_node`` on its node."""

    index: int
    per_node: int


@dataclass
class Started:
    """The servers requests go to, and what to await after a transport error."""

    pool: ServerPool
    recover: Recover | None


class Backend(ABC):
    """The servers of a run of ``config``: use :meth:`resolve`, :meth:`prepare`, :meth:`start`
    in that order, inside one exit stack that closes whatever they opened."""

    def __init__(self, config: RunConfig, stream: TextIO, transport: Transport | None = None):
        self.config = config
        self.stream = stream
        self.transport = transport
        self.request_model = ""

    @abstractmethod
    async def resolve(self, stack: contextlib.AsyncExitStack) -> None:
        """Find the model requests name (``request_model``) and what its context is."""

    @abstractmethod
    async def counter(self, say: Callable[[str], None]) -> TokenCounter | None:
        """What counts prompt tokens here, or None when rows cannot be counted."""

    @abstractmethod
    def context(self, job: Job) -> int | None:
        """The context rows are fitted to, once the job has counted them (None: not fitted)."""

    @property
    def starts_early(self) -> bool:
        """Whether :meth:`start` may run while the input is checked (the context is known)."""
        return False

    @abstractmethod
    async def start(self, stack: contextlib.AsyncExitStack, context: int | None,
                    replica: Replica | None = None) -> Started:
        """Connect (and start servers where vbatch runs them) with rows fitted to ``context``."""

    async def prepare(self, job: Job) -> int | None:
        """Check and count the job's input (rows the builder cannot count are not: no
        tokenizer is loaded for them); returns (and sets) the context rows fit."""
        started = job.clock()
        counter = await self.counter(job.say) if job.builder.countable else None
        await job.prepare(counter)
        context = self.context(job)
        job.set_context(context)
        job.phases["check"] = job.clock() - started
        return context

    async def _timed_start(self, stack: contextlib.AsyncExitStack, context: int | None,
                           job: Job) -> Started:
        """:meth:`start`, its seconds kept as the job's "server start" phase."""
        started = job.clock()
        try:
            return await self.start(stack, context)
        finally:
            job.phases["server start"] = job.clock() - started

    async def connect(self, stack: contextlib.AsyncExitStack, job: Job) -> Started:
        """Prepare ``job`` and start the servers: at the same time when the context is known
        (the servers are starting while the input is checked), else one after the other."""
        if not self.starts_early:
            return await self._timed_start(stack, await self.prepare(job), job)
        starting = asyncio.create_task(
            self._timed_start(stack, self.config.max_model_len, job))
        try:
            await self.prepare(job)
        except BaseException:
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            raise
        return await starting
