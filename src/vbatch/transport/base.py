"""The transport seam: what sends one HTTP request and returns the raw answer.

:class:`~vbatch.transport.client.HTTPClient` speaks JSON and OpenAI errors on top of a
:class:`Transport`; the network one is :class:`~vbatch.transport.network.NetworkTransport`
(aiohttp), the in-process test double is :class:`~vbatch.testing.fake.SimulatedTransport`.
A transport raises only :class:`~vbatch.errors.TransportError` subclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["RawResponse", "Transport"]


@dataclass(frozen=True, slots=True)
class RawResponse:
    """An HTTP answer: status, headers and the whole body."""

    status: int
    body: bytes
    headers: Mapping[str, str]


class Transport(Protocol):
    """Sends requests; one given to a client is shared, and opened and closed by its owner."""

    async def send(self, method: str, url: str, headers: Mapping[str, str],
                   body: bytes | None) -> RawResponse:
        """Send one request; raises ConnectError or RequestTimeout when there is no answer."""
