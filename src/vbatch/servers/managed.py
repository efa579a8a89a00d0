"""vLLM servers vbatch starts for the run: the model's tokenizer counts rows here, the
context is sized from them, and the servers are watched and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from vbatch.prepare.plan import context_from_data
from vbatch.prepare.tokens import TokenCounter, fitting_counter
from vbatch.servers.backend import Backend, Replica, Started
from vbatch.servers.default_model import resolve_model
from vbatch.servers.options import ServerOptions, replica_options
from vbatch.servers.process import ManagedServer
from vbatch.transport.pool import ServerPool, connect

if TYPE_CHECKING:
    from vbatch.engine.job import Job

__all__ = ["ManagedBackend"]


class ManagedBackend(Backend):
    """``--replicas`` vLLM servers (one by default) of ``--model`` or the embedded model."""

    model = ""
    served_name: str | None = None

    async def resolve(self, stack: contextlib.AsyncExitStack) -> None:
        self.model, self.served_name = await asyncio.to_thread(resolve_model, self.config.model,
                                                              self.config.pooling)
        self.request_model = self.served_name or self.model

    async def counter(self, say: Callable[[str], None]) -> TokenCounter | None:
        config = self.config
        return await asyncio.to_thread(fitting_counter, config.tokenizer or self.model,
                                       config.max_tokens, config.max_model_len)

    def context(self, job: Job) -> int | None:
        config = self.config
        return config.max_model_len or context_from_data(
            job.pending.prompt_tokens, job.pending.max_tokens, self.model, job.say)

    @property
    def starts_early(self) -> bool:
        return self.config.max_model_len is not None

    def options(self, context: int | None, replica: Replica | None) -> list[ServerOptions]:
        """The options of each server to start here: ``--replicas`` of them, or the one of a
        Ray worker (``replica``), whose log is its own."""
        config = self.config
        log = None
        if replica is not None:
            log = config.output.with_name(f"{config.output.name}.server.{replica.index}.log")
        options = dataclasses.replace(
            ServerOptions.for_run(config, self.model, self.served_name,
                                  secrets.token_urlsafe(24), log),
            max_model_len=context)
        if replica is None:
            count = config.replicas or 1
            return [replica_options(options, i, count) for i in range(count)]
        if options.resolved_build == "cpu" and replica.per_node > 1:
            shared = replica_options(options, replica.index % replica.per_node,
                                     replica.per_node)
            options = dataclasses.replace(shared, log_path=options.log_path)
        return [options]

    async def start(self, stack: contextlib.AsyncExitStack, context: int | None,
                    replica: Replica | None = None) -> Started:
        config = self.config
        quiet = config.quiet or replica is not None
        servers = [ManagedServer(options, stream=self.stream, quiet=quiet)
                   for options in self.options(context, replica)]
        await asyncio.gather(*(stack.enter_async_context(server) for server in servers))
        pool = await stack.enter_async_context(ServerPool([
            connect(s.root_url, s.api_url, api_key=s.api_key, pool_size=config.pool_size,
                    timeout=config.request_timeout, transport=self.transport)
            for s in servers]))
        return Started(pool, servers[0].recover if len(servers) == 1 else pool.recover)
