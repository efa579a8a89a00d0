"""vLLM servers vbatch starts for the run: the model's tokenizer counts rows here, the
context is sized from them (or, on the CPU, is the model's own, so that the server starts while
they are counted: :mod:`vbatch.servers.start_context`), and the servers are watched and
restarted."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import Callable

import numpy as np

from vbatch.prepare.plan import context_from_data
from vbatch.prepare.tokens import TokenCounter, fitting_counter
from vbatch.servers.backend import Backend, Replica, Started
from vbatch.servers.default_model import resolve_model
from vbatch.servers.options import ServerOptions, replica_options, server_environment
from vbatch.servers.process import VllmProcess
from vbatch.servers.start_context import start_context
from vbatch.transport.pool import ServerPool, connect

__all__ = ["ManagedBackend"]


class ManagedBackend(Backend):
    """``--replicas`` vLLM servers (one by default) of ``--model`` or the embedded model."""

    model = ""
    served_name: str | None = None
    _start_context: int | None = None

    async def resolve(self, stack: contextlib.AsyncExitStack) -> None:
        self.model, self.served_name = await asyncio.to_thread(resolve_model, self.options.model,
                                                              self.settings.pooling)
        self.request_model = self.served_name or self.model
        if self.options.max_model_len is None:
            first = self.server_options(None, None)[0]
            self._start_context = start_context(first, server_environment(first, None))

    async def counter(self, say: Callable[[str], None]) -> TokenCounter | None:
        options = self.options
        return await asyncio.to_thread(fitting_counter, options.tokenizer or self.model,
                                       options.max_tokens, self.known_context)

    def context(self, prompt_tokens: np.ndarray | None, max_tokens: int | np.ndarray | None,
                say: Callable[[str], None]) -> int | None:
        if self.options.max_model_len is not None:
            return self.options.max_model_len
        if self._start_context is not None:
            say(f"--max-model-len {self._start_context}: the model's own (the server's KV "
                "cache space holds it), known before the rows were counted")
            return self._start_context
        return context_from_data(prompt_tokens, max_tokens, self.model, say)

    @property
    def known_context(self) -> int | None:
        return self.options.max_model_len or self._start_context

    def server_options(self, context: int | None, replica: Replica | None
                       ) -> list[ServerOptions]:
        """The options of each server to start here: ``--replicas`` of them, or the one of a
        Ray worker (``replica``), whose log is its own."""
        settings = self.settings
        log = settings.paths.server_log
        if replica is not None:
            log = log.with_name(f"{settings.paths.final.name}.server.{replica.index}.log")
        options = dataclasses.replace(
            ServerOptions.for_run(settings, self.model, self.served_name,
                                  secrets.token_urlsafe(24), log),
            max_model_len=context)
        if replica is None:
            count = settings.options.replicas or 1
            return [replica_options(options, i, count) for i in range(count)]
        if options.resolved_build == "cpu" and replica.per_node > 1:
            shared = replica_options(options, replica.index % replica.per_node,
                                     replica.per_node)
            options = dataclasses.replace(shared, log_path=options.log_path)
        return [options]

    async def start(self, stack: contextlib.AsyncExitStack, context: int | None,
                    replica: Replica | None = None) -> Started:
        send = self.settings.send
        quiet = self.options.quiet or replica is not None
        servers = [VllmProcess(options, stream=self.stream, quiet=quiet)
                   for options in self.server_options(context, replica)]
        await asyncio.gather(*(stack.enter_async_context(server) for server in servers))
        pool = await stack.enter_async_context(ServerPool([
            connect(s.root_url, s.api_url, api_key=s.api_key, pool_size=send.pool_size,
                    timeout=send.request_timeout, transport=self.transport)
            for s in servers], affine=send.prefix_routing))
        return Started(pool, servers[0].recover if len(servers) == 1 else pool.recover)
