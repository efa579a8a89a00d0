"""Running servers (``--base-url``, ``--endpoints``): nothing to start, the model and its
context are asked of the first one."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vbatch.errors import ConfigError, HTTPStatusError, RequestError
from vbatch.prepare.tokens import TokenCounter, fitting_counter, server_counter
from vbatch.servers.backend import Backend, Replica, Started
from vbatch.transport.client import HTTPClient
from vbatch.transport.pool import ServerConnection, ServerPool, connect, read_endpoints_file
from vbatch.urls import normalize_base_url

__all__ = ["RemoteBackend", "discover_model"]


class RemoteBackend(Backend):
    """The servers of ``--base-url`` and ``--endpoints``."""

    _pool: ServerPool | None = None
    _context: int | None = None
    _counted = False

    def servers(self) -> list[ServerConnection]:
        """A connection to each listed server (weights from ``--endpoints``)."""
        config, send = self.options, self.settings.send
        listed = [(url, 1.0) for url in config.base_urls]
        if config.endpoints_file is not None:
            listed += read_endpoints_file(config.endpoints_file)
        key = config.resolved_api_key
        urls = [(normalize_base_url(url), weight) for url, weight in listed]
        return [connect(u.root, u.api, api_key=key, credentials=u.credentials, weight=weight,
                        pool_size=send.pool_size, timeout=send.request_timeout,
                        transport=self.transport)
                for u, weight in urls]

    async def _open(self, stack: contextlib.AsyncExitStack) -> ServerPool:
        if self._pool is None:
            self._pool = await stack.enter_async_context(ServerPool(
                self.servers(), affine=self.settings.send.prefix_routing))
        return self._pool

    async def resolve(self, stack: contextlib.AsyncExitStack) -> None:
        first = (await self._open(stack)).first
        self.request_model, self._context = await discover_model(
            first.client, first.prefix, self.options.model)

    async def counter(self, say: Callable[[str], None]) -> TokenCounter | None:
        config, context = self.options, self._context
        if context is None:
            return None
        local = config.tokenizer
        if local is None and config.model and Path(config.model).is_dir():
            local = config.model
        if local:
            counter: TokenCounter | None = fitting_counter(local, config.max_tokens, context)
        else:
            assert self._pool is not None, "resolve() first"
            counter = await server_counter(self._pool.first.client, self.request_model,
                                           config.max_tokens, context, say)
        self._counted = counter is not None
        return counter

    def context(self, prompt_tokens: np.ndarray | None, max_tokens: int | np.ndarray | None,
                say: Callable[[str], None]) -> int | None:
        return self._context if self._counted else None

    async def start(self, stack: contextlib.AsyncExitStack, context: int | None,
                    replica: Replica | None = None) -> Started:
        pool = await self._open(stack)
        return Started(pool, pool.recover)


async def discover_model(client: HTTPClient, prefix: str, wanted: str | None
                         ) -> tuple[str, int | None]:
    """The model to use and its ``max_model_len``, from ``/v1/models``."""
    where = client.base + prefix
    try:
        listing = await client.get_json(prefix + "/models")
    except RequestError as exc:
        if isinstance(exc, HTTPStatusError) and exc.status_code in (401, 403):
            raise ConfigError(
                f"{where} refused the API key (HTTP {exc.status_code}): check --api-key, "
                "VBATCH_API_KEY or OPENAI_API_KEY"
            ) from None
        if wanted:
            return wanted, None
        raise ConfigError(
            f"cannot list the models of {where} ({exc}): is the server up? "
            "Give --model to skip this check."
        ) from None
    models = {m.get("id"): m for m in listing.get("data", []) if isinstance(m, dict)}
    if wanted is None:
        if not models:
            raise ConfigError(f"{where} serves no model: give --model")
        if len(models) > 1:
            names = ", ".join(map(str, models))
            raise ConfigError(f"{where} serves several models ({names}): give --model")
        wanted = str(next(iter(models)))
    elif models and wanted not in models:
        names = ", ".join(map(str, models))
        raise ConfigError(f"{where} does not serve the model {wanted!r} (it serves {names}): "
                          "check --model")
    context = (models.get(wanted) or {}).get("max_model_len")
    return wanted, context if isinstance(context, int) else None
