"""The network transport: aiohttp, one connection pool per client.

This module is the only place where aiohttp and OS network errors exist: they are
translated into vbatch's exceptions (:mod:`vbatch.errors`) in :func:`map_network_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping

import aiohttp

from vbatch.defaults import DEFAULT_POOL_SIZE, DEFAULT_REQUEST_TIMEOUT
from vbatch.errors import ConnectError, RequestTimeout
from vbatch.transport.base import RawResponse

__all__ = ["NetworkTransport", "map_network_errors"]


@contextlib.contextmanager
def map_network_errors(url: str, timeout: float) -> Iterator[None]:
    """Turn aiohttp's and the OS's errors on ``url`` into ConnectError and RequestTimeout."""
    try:
        yield
    except asyncio.TimeoutError:
        raise RequestTimeout(f"no answer from {url} within {timeout:g} s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectError(f"{type(exc).__name__} on {url}: {exc}") from None


class NetworkTransport:
    """Sends requests over HTTP with aiohttp, at most ``pool_size`` connections at once."""

    def __init__(self, *, pool_size: int = DEFAULT_POOL_SIZE,
                 timeout: float = DEFAULT_REQUEST_TIMEOUT):
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
        with map_network_errors(url, self._timeout):
            async with self._session.request(method, url, data=body, headers=headers) as response:
                raw = await response.read()
                return RawResponse(response.status, raw, response.headers)
