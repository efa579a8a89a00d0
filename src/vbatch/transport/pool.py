"""Several servers behind one client: least outstanding requests relative to weight, and
prompts that start alike on one server.

A :class:`ServerPool` sends each request to the healthy server with the fewest requests
outstanding relative to its weight; with two or more servers, a request whose prompt has a
long start goes to the server that start is affine to, unless that one is well above the
least loaded (:mod:`vbatch.transport.affinity`). With two or more servers, one that refuses
connections, drops them or times out is drained: no new requests go to it, the failed ones
are sent again elsewhere (without using up their retries), and a probe of ``/health`` every
few seconds brings it back when it answers. A pool of one server never drains it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vbatch.defaults import DEFAULT_MAX_CONCURRENCY, DEFAULT_REQUEST_TIMEOUT
from vbatch.errors import ConfigError, HTTPStatusError, RequestError, TransportError
from vbatch.transport.affinity import affinity_key, rendezvous_score, server_salt, spills
from vbatch.transport.base import Transport
from vbatch.transport.client import HTTPClient
from vbatch.transport.metrics import ServerLoad, parse_metrics
from vbatch.urls import normalize_base_url

_PROBE_S = 2.0
PROBE_TIMEOUT_S = 5.0
_WAIT_FOR_ANY_S = 30.0
# Routes vLLM serves at its root only, not under /v1.
ROOT_ROUTES = frozenset({"/classify"})


@dataclass
class ServerConnection:
    """One server: its client, a separate client for health and metrics (so they never queue
    behind requests for a connection), its weight and what it did."""

    url: str
    client: HTTPClient
    probe: HTTPClient
    prefix: str = "/v1"
    weight: float = 1.0
    outstanding: int = 0
    healthy: bool = True
    requests: int = 0
    errors: int = 0
    drained: int = 0
    affine: int = 0  # requests sent here for their prompt's start
    load: ServerLoad | None = None

    def path_of(self, route: str) -> str:
        """The path of an API route on this server: under its API prefix (``/v1``), but at
        its root for a route vLLM serves only there."""
        return route if route in ROOT_ROUTES else self.prefix + route
    latency_total: float = field(default=0.0, repr=False)

    def summary(self) -> dict[str, Any]:
        answered = self.requests - self.errors
        return {
            "url": self.url,
            "weight": self.weight,
            "requests": self.requests,
            "transport_errors": self.errors,
            "times_drained": self.drained,
            "affine_requests": self.affine,
            "mean_latency_s": round(self.latency_total / answered, 4) if answered else None,
        }


def connect(root: str, api: str, *, api_key: str | None = None, credentials: str | None = None,
            weight: float = 1.0, pool_size: int = DEFAULT_MAX_CONCURRENCY,
            timeout: float = DEFAULT_REQUEST_TIMEOUT, transport: Transport | None = None
            ) -> ServerConnection:
    """The server at ``root`` whose OpenAI API is at ``api``; ``credentials``
    (``user:password``) for basic authentication where no API key is given."""
    probe = HTTPClient(root, api_key=api_key, pool_size=4, timeout=PROBE_TIMEOUT_S,
                       credentials=credentials, transport=transport)
    client = HTTPClient(root, api_key=api_key, pool_size=pool_size, timeout=timeout,
                        credentials=credentials, transport=transport)
    return ServerConnection(url=api, client=client, probe=probe, prefix=api[len(root):],
                            weight=weight)


def read_endpoints_file(path: Path) -> list[tuple[str, float]]:
    """``URL [WEIGHT]`` per line; blank lines and ``#`` comments are skipped."""
    if not path.exists():
        raise ConfigError(f"--endpoints {path} does not exist")
    servers = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        try:
            weight = float(parts[1]) if len(parts) > 1 else 1.0
        except ValueError:
            raise ConfigError(
                f"{path}:{line_no}: the weight {parts[1]!r} is not a number"
            ) from None
        if weight <= 0 or len(parts) > 2:
            raise ConfigError(f"{path}:{line_no}: expected 'URL [WEIGHT>0]'")
        normalize_base_url(parts[0])
        servers.append((parts[0], weight))
    if not servers:
        raise ConfigError(f"--endpoints {path} lists no URL")
    return servers


class ServerPool:
    """Sends requests over several servers (also used, with one, for a single server)."""

    def __init__(self, servers: list[ServerConnection], affine: bool = True):
        if not servers:
            raise ConfigError("no server to send to")
        self.servers = servers
        self.affine = affine
        self._salts = {id(server): server_salt(server.url) for server in servers}
        self._back = asyncio.Event()
        self._probe: asyncio.Task[None] | None = None

    @property
    def first(self) -> ServerConnection:
        return self.servers[0]

    async def __aenter__(self) -> ServerPool:
        for server in self.servers:
            await server.client.__aenter__()
            await server.probe.__aenter__()
        if len(self.servers) > 1:
            self._probe = asyncio.create_task(self._probe_health())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        for server in self.servers:
            await server.client.__aexit__(None, None, None)
            await server.probe.__aexit__(None, None, None)

    def _pick(self, body: bytes) -> ServerConnection:
        candidates = [e for e in self.servers if e.healthy] or self.servers
        least = min(candidates, key=lambda e: (e.outstanding + 1) / e.weight)
        key = affinity_key(body) if self.affine and len(candidates) > 1 else None
        if key is None:
            return least
        salts = self._salts
        chosen = max(candidates, key=lambda e: rendezvous_score(key, salts[id(e)], e.weight))
        if chosen is not least and spills(chosen.outstanding / chosen.weight,
                                          least.outstanding / least.weight):
            return least
        chosen.affine += 1
        return chosen

    async def post_json(self, route: str, body: bytes) -> dict[str, Any]:
        """POST to the healthy server the prompt is affine to, or the least loaded one;
        drains it on a transport error."""
        server = self._pick(body)
        server.outstanding += 1
        server.requests += 1
        started = time.monotonic()
        try:
            answer = await server.client.post_json(server.path_of(route), body)
        except TransportError:
            server.errors += 1
            self._drain(server)
            raise
        except RequestError:
            server.latency_total += time.monotonic() - started
            raise
        finally:
            server.outstanding -= 1
        server.latency_total += time.monotonic() - started
        return answer

    def _drain(self, server: ServerConnection) -> None:
        if len(self.servers) > 1 and server.healthy:
            server.healthy = False
            server.drained += 1
            self._back.clear()

    async def recover(self) -> bool:
        """After a transport error: True when another server can take the request now."""
        if len(self.servers) < 2:
            return False
        if any(e.healthy for e in self.servers):
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._back.wait(), _WAIT_FOR_ANY_S)
            return True
        return False

    async def _healthy(self, server: ServerConnection) -> bool:
        """Up when ``/health`` answers; a server without that route answers 404: up too."""
        try:
            await server.probe.get_text("/health")
        except HTTPStatusError as exc:
            return (exc.status_code or 0) < 500
        except RequestError:
            return False
        return True

    async def _probe_health(self) -> None:
        while True:
            await asyncio.sleep(_PROBE_S)
            checks = await asyncio.gather(*(self._healthy(e) for e in self.servers))
            for server, healthy in zip(self.servers, checks, strict=True):
                if healthy and not server.healthy:
                    server.healthy = True
                    self._back.set()
                elif not healthy:
                    self._drain(server)

    async def load(self) -> ServerLoad | None:
        """The summed load of the healthy servers, from their ``/metrics`` (each server keeps
        its own as ``load``)."""
        async def one(server: ServerConnection) -> ServerLoad | None:
            try:
                return parse_metrics(await server.probe.get_text("/metrics"))
            except RequestError:
                return None

        healthy = [server for server in self.servers if server.healthy]
        for server, load in zip(healthy, await asyncio.gather(*map(one, healthy)), strict=True):
            server.load = load
        loads = [server.load for server in healthy if server.load is not None]
        return ServerLoad.summed(loads) if loads else None

    def summary(self) -> list[dict[str, Any]]:
        """Per-server figures for the run's summary."""
        return [server.summary() for server in self.servers]
