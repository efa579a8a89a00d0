"""Where a run's requests go, decided once: running servers, or vLLM servers vbatch starts.

A :class:`Backend` finds the model, gives the token counter that fits rows to its context,
and starts what it must (nothing, for running servers: as datatrove's endpoint server).
:func:`~vbatch.servers.factory.make_backend` is the one place that chooses; the runner and
the Ray driver and workers all go through it (in :class:`~vbatch.steps.Run`).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from vbatch.prepare.tokens import TokenCounter
from vbatch.settings import RunSettings
from vbatch.transport.base import Transport
from vbatch.transport.pool import ServerPool

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
    """The servers of a run: :meth:`resolve` (the model), :meth:`counter` (what counts the
    rows), :meth:`context` (what they are fitted to) and :meth:`start`, inside one exit stack
    that closes whatever they opened. A backend returns facts; the run
    (:class:`~vbatch.steps.Run`) decides what to do with them."""

    def __init__(self, settings: RunSettings, stream: TextIO, transport: Transport | None = None):
        self.settings = settings
        self.options = settings.options
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
    def context(self, prompt_tokens: np.ndarray | None, max_tokens: int | np.ndarray | None,
                say: Callable[[str], None]) -> int | None:
        """The context rows are fitted to, given what they count and ask (None: not fitted)."""

    @property
    def known_context(self) -> int | None:
        """The context before the rows are counted, when it is given: then :meth:`start` may
        run while the input is checked."""
        return None

    @abstractmethod
    async def start(self, stack: contextlib.AsyncExitStack, context: int | None,
                    replica: Replica | None = None) -> Started:
        """Connect (and start servers where vbatch runs them) with rows fitted to ``context``."""
