"""A lean HTTP client for OpenAI-compatible servers.

JSON in, JSON out, OpenAI-style errors turned into :class:`~vbatch.errors.HTTPStatusError`;
the bytes travel through a :class:`~vbatch.transport.base.Transport`.
"""

from __future__ import annotations

import base64
import email.utils
import time
from types import TracebackType
from typing import Any

import orjson

from vbatch.defaults import DEFAULT_MAX_CONCURRENCY, DEFAULT_REQUEST_TIMEOUT
from vbatch.errors import HTTPStatusError, InvalidResponseError
from vbatch.transport.base import Transport
from vbatch.transport.network import NetworkTransport

__all__ = ["HTTPClient", "error_details", "parse_retry_after"]

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
    """Posts JSON to one server; use as an async context manager.

    Requests go through ``transport``: by default a :class:`NetworkTransport` of its own,
    opened and closed with the client; a given one is shared and left open.
    """

    def __init__(
        self,
        base: str,
        *,
        api_key: str | None = None,
        pool_size: int = DEFAULT_MAX_CONCURRENCY,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        credentials: str | None = None,
        transport: Transport | None = None,
    ):
        self.base = base.rstrip("/")
        self._headers = dict(_JSON)
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        elif credentials:
            token = base64.b64encode(credentials.encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._own: NetworkTransport | None = None
        if transport is None:
            self._own = NetworkTransport(headers=self._headers, pool_size=pool_size,
                                         timeout=timeout)
        self._transport: Transport = transport or self._own  # type: ignore[assignment]

    async def __aenter__(self) -> HTTPClient:
        if self._own is not None:
            await self._own.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._own is not None:
            await self._own.close()

    async def post_json(self, path: str, body: bytes) -> dict[str, Any]:
        """POST ``body`` (JSON bytes) and return the parsed JSON object of a 2xx answer."""
        return await self._request("POST", path, body)

    async def get_json(self, path: str) -> dict[str, Any]:
        """GET a JSON object."""
        return await self._request("GET", path, None)

    async def get_text(self, path: str) -> str:
        """GET a text body (e.g. Prometheus metrics)."""
        response = await self._transport.send("GET", self.base + path, self._headers, None)
        if response.status >= 400:
            raise HTTPStatusError(response.status,
                                  error_details(response.status, response.body)[0])
        return response.body.decode("utf-8", "replace")

    async def get_status(self, path: str) -> int:
        """The HTTP status of a GET (e.g. ``/health``)."""
        response = await self._transport.send("GET", self.base + path, self._headers, None)
        return response.status

    async def _request(self, method: str, path: str, body: bytes | None) -> dict[str, Any]:
        response = await self._transport.send(method, self.base + path, self._headers, body)
        status, raw = response.status, response.body
        if status >= 400:
            message, param, code = error_details(status, raw)
            if status == 404 and message == "Not Found":
                message = (f"Not Found: the server has no {path} route (does its model serve "
                           "this endpoint? a pooling model needs vLLM's --runner pooling)")
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise HTTPStatusError(status, message, retry_after, param=param, code=code)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidResponseError(f"the answer to {path} is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise InvalidResponseError(f"the answer to {path} is not a JSON object")
        return parsed
