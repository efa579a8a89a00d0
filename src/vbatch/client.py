"""A lean HTTP client for OpenAI-compatible servers.

One aiohttp session with one connection pool sized to the concurrency. This module is the
only place where aiohttp and OS errors exist: they are translated into vbatch's own
exceptions (:mod:`vbatch.errors`) here.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import time
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from vbatch.errors import (
    ConnectError,
    HTTPStatusError,
    InvalidResponseError,
    RequestTimeout,
)

_JSON = {"Content-Type": "application/json"}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_details(status: int, body: bytes) -> tuple[str, str | None, str | None]:
    """``(message, param, code)`` of an OpenAI-style error body (else the body's start)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace").strip() or f"status {status}", None, None
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            param, code = error.get("param"), error.get("code")
            return (
                str(error["message"]),
                param if isinstance(param, str) else None,
                code if isinstance(code, str) else None,
            )
        if isinstance(error, str):
            return error, None, None
        if isinstance(parsed.get("detail"), str):
            return str(parsed["detail"]), None, None
    return body[:500].decode("utf-8", "replace"), None, None


class HTTPClient:
    """Posts JSON to one server; use as an async context manager."""

    def __init__(
        self,
        base: str,
        *,
        api_key: str | None = None,
        pool_size: int = 256,
        timeout: float = 600.0,
        credentials: str | None = None,
    ):
        self.base = base.rstrip("/")
        self._headers = dict(_JSON)
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        elif credentials:
            token = base64.b64encode(credentials.encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._pool_size = pool_size
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HTTPClient:
        connector = aiohttp.TCPConnector(
            limit=self._pool_size, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=60
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers=self._headers,
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            skip_auto_headers=("User-Agent",),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HTTPClient is used outside 'async with'")
        return self._session

    async def post_json(self, path: str, body: bytes) -> dict[str, Any]:
        """POST ``body`` (JSON bytes) and return the parsed JSON object of a 2xx answer."""
        return await self._request("POST", path, body)

    async def get_json(self, path: str) -> dict[str, Any]:
        """GET a JSON object."""
        return await self._request("GET", path, None)

    async def get_text(self, path: str) -> str:
        """GET a text body (e.g. Prometheus metrics)."""
        status, raw, _ = await self._send("GET", path, None)
        if status >= 400:
            raise HTTPStatusError(status, error_details(status, raw)[0])
        return raw.decode("utf-8", "replace")

    async def _request(self, method: str, path: str, body: bytes | None) -> dict[str, Any]:
        status, raw, headers = await self._send(method, path, body)
        if status >= 400:
            message, param, code = error_details(status, raw)
            retry_after = parse_retry_after(headers.get("Retry-After"))
            raise HTTPStatusError(status, message, retry_after, param=param, code=code)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidResponseError(f"the answer to {path} is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise InvalidResponseError(f"the answer to {path} is not a JSON object")
        return parsed

    async def _send(
        self, method: str, path: str, body: bytes | None
    ) -> tuple[int, bytes, Any]:
        url = self.base + path
        try:
            async with self.session.request(method, url, data=body) as response:
                raw = await response.read()
                return response.status, raw, response.headers
        except asyncio.TimeoutError:
            raise RequestTimeout(f"no answer from {url} within {self._timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            raise ConnectError(f"{type(exc).__name__} on {url}: {exc}") from None
        except OSError as exc:
            raise ConnectError(f"{type(exc).__name__} on {url}: {exc}") from None
