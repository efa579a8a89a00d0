"""An in-process server double behind the real interface, as httpx's ``MockTransport``.

:class:`SimulatedTransport` answers what the simulator process would, without a socket: give
it to :func:`vbatch.arun` (``transport=``) or to an :class:`~vbatch.transport.client.HTTPClient`
to test vbatch's own logic (retries, resume, fitting, records) in process::

    server = SimulatedServer(SimConfig(fail_first=3))
    result = await vbatch.arun(config, transport=SimulatedTransport(server))
    server.counters.requests_seen
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from vbatch.errors import ConnectError
from vbatch.testing.behaviour import Answer, SimConfig, SimulatedServer
from vbatch.testing.pooling import POOLING_ROUTES
from vbatch.transport.base import RawResponse

__all__ = ["SimulatedTransport"]

_JSON = {"Content-Type": "application/json"}


class SimulatedTransport:
    """Sends every request to ``server`` (a default :class:`SimulatedServer` if None)."""

    def __init__(self, server: SimulatedServer | None = None):
        self.server = server if server is not None else SimulatedServer(SimConfig())

    async def send(self, method: str, url: str, headers: Mapping[str, str],
                   body: bytes | None) -> RawResponse:
        """Answer as the simulator would; a dropped connection raises ConnectError."""
        server = self.server
        path = urlsplit(url).path
        key = headers.get("Authorization")
        raw = body or b""
        answer: Answer
        if path.endswith("/chat/completions"):
            answer = await server.complete(raw, key, chat=True)
        elif path.endswith("/completions"):
            answer = await server.complete(raw, key, chat=False)
        elif path in POOLING_ROUTES:
            answer = server.pool(path, raw, key)
        elif path.endswith("/models"):
            answer = server.models(key)
        elif path == "/version":
            answer = server.version()
        elif path == "/tokenize":
            answer = server.tokenize(raw)
        elif path == "/metrics":
            answer = server.metrics()
        elif path == "/health":
            answer = Answer(200, "")
        else:
            answer = Answer(404, {"detail": "Not Found"})
        if answer.dropped:
            raise ConnectError(f"ServerDisconnectedError on {url}: Server disconnected")
        return RawResponse(answer.status, answer.encoded(), {**_JSON, **(answer.headers or {})})
