"""The network transport: aiohttp, one connection pool per client.

This module is the only place where aiohttp and OS network errors exist: they are
translated into vbatch's exceptions (:mod:`vbatch.errors`) by :func:`map_network_errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from vbatch.defaults import DEFAULT_MAX_CONCURRENCY, DEFAULT_REQUEST_TIMEOUT
from vbatch.errors import ConnectError, RequestTimeout, TransportError
from vbatch.transport.base import RawResponse

__all__ = ["NETWORK_ERRORS", "NetworkTransport", "map_network_errors"]


NETWORK_ERRORS = (asyncio.TimeoutError, aiohttp.ClientError, OSError)


def map_network_errors(exc: BaseException, url: str, timeout: float) -> TransportError:
    """The vbatch error for one of aiohttp's or the OS's (:data:`NETWORK_ERRORS`) on ``url``."""
    if isinstance(exc, asyncio.TimeoutError):
        return RequestTimeout(f"no answer from {url} within {timeout:g} s")
    return ConnectError(f"{type(exc).__name__} on {url}: {exc}")


class NetworkTransport:
    """Sends requests over HTTP with aiohttp, at most ``pool_size`` connections at once;
    ``headers`` (when given) go with every request without being passed each time."""

    def __init__(self, *, headers: Mapping[str, str] | None = None,
                 pool_size: int = DEFAULT_MAX_CONCURRENCY,
                 timeout: float = DEFAULT_REQUEST_TIMEOUT):
        self._headers = headers
        self._pool_size = pool_size
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Create the connection pool."""
        connector = aiohttp.TCPConnector(
            limit=self._pool_size, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=60
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            headers=self._headers,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, method: str, url: str, headers: Mapping[str, str],
                   body: bytes | None) -> RawResponse:
        if self._session is None:
            raise RuntimeError("the transport is used before open()")
        extra = None if headers is self._headers else headers
        try:
            async with self._session.request(method, url, data=body, headers=extra) as response:
                raw = await response.read()
                return RawResponse(response.status, raw, response.headers)
        except NETWORK_ERRORS as exc:
            raise map_network_errors(exc, url, self._timeout) from None
