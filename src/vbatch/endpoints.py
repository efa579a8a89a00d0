"""Several servers behind one client: least outstanding requests relative to weight.

An :class:`EndpointPool` sends each request to the healthy endpoint with the fewest requests
outstanding relative to its weight. With two or more endpoints, one that refuses
connections, drops them or times out is drained: no new requests go to it, the failed ones
are sent again elsewhere (without using up their retries), and a probe of ``/health`` every
few seconds brings it back when it answers. A pool of one endpoint never drains it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vbatch.client import HTTPClient
from vbatch.concurrency import ServerLoad, parse_metrics
from vbatch.config import normalize_base_url
from vbatch.errors import ConfigError, HTTPStatusError, RequestError, TransportError

_PROBE_S = 2.0
PROBE_TIMEOUT_S = 5.0
_WAIT_FOR_ANY_S = 30.0


@dataclass
class Endpoint:
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
    latency_total: float = field(default=0.0, repr=False)

    def summary(self) -> dict[str, Any]:
        answered = self.requests - self.errors
        return {
            "url": self.url,
            "weight": self.weight,
            "requests": self.requests,
            "transport_errors": self.errors,
            "times_drained": self.drained,
            "mean_latency_s": round(self.latency_total / answered, 4) if answered else None,
        }


def read_endpoints_file(path: Path) -> list[tuple[str, float]]:
    """``URL [WEIGHT]`` per line; blank lines and ``#`` comments are skipped."""
    if not path.exists():
        raise ConfigError(f"--endpoints {path} does not exist")
    endpoints = []
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
        endpoints.append((parts[0], weight))
    if not endpoints:
        raise ConfigError(f"--endpoints {path} lists no URL")
    return endpoints


class EndpointPool:
    """Sends requests over several endpoints (also used, with one, for a single server)."""

    def __init__(self, endpoints: list[Endpoint]):
        if not endpoints:
            raise ConfigError("no endpoint to send to")
        self.endpoints = endpoints
        self._back = asyncio.Event()
        self._probe: asyncio.Task[None] | None = None

    @property
    def first(self) -> Endpoint:
        return self.endpoints[0]

    async def __aenter__(self) -> EndpointPool:
        for endpoint in self.endpoints:
            await endpoint.client.__aenter__()
            await endpoint.probe.__aenter__()
        if len(self.endpoints) > 1:
            self._probe = asyncio.create_task(self._probe_health())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        for endpoint in self.endpoints:
            await endpoint.client.__aexit__(None, None, None)
            await endpoint.probe.__aexit__(None, None, None)

    def _pick(self) -> Endpoint:
        candidates = [e for e in self.endpoints if e.healthy] or self.endpoints
        return min(candidates, key=lambda e: (e.outstanding + 1) / e.weight)

    async def post_json(self, route: str, body: bytes) -> dict[str, Any]:
        """POST to the least loaded healthy endpoint; drains it on a transport error."""
        endpoint = self._pick()
        endpoint.outstanding += 1
        endpoint.requests += 1
        started = time.monotonic()
        try:
            answer = await endpoint.client.post_json(endpoint.prefix + route, body)
        except TransportError:
            endpoint.errors += 1
            self._drain(endpoint)
            raise
        except RequestError:
            endpoint.latency_total += time.monotonic() - started
            raise
        finally:
            endpoint.outstanding -= 1
        endpoint.latency_total += time.monotonic() - started
        return answer

    def _drain(self, endpoint: Endpoint) -> None:
        if len(self.endpoints) > 1 and endpoint.healthy:
            endpoint.healthy = False
            endpoint.drained += 1
            self._back.clear()

    async def recover(self) -> bool:
        """After a transport error: True when another endpoint can take the request now."""
        if len(self.endpoints) < 2:
            return False
        if any(e.healthy for e in self.endpoints):
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._back.wait(), _WAIT_FOR_ANY_S)
            return True
        return False

    async def _healthy(self, endpoint: Endpoint) -> bool:
        """Up when ``/health`` answers; a server without that route answers 404: up too."""
        try:
            await endpoint.probe.get_text("/health")
        except HTTPStatusError as exc:
            return (exc.status_code or 0) < 500
        except RequestError:
            return False
        return True

    async def _probe_health(self) -> None:
        while True:
            await asyncio.sleep(_PROBE_S)
            checks = await asyncio.gather(*(self._healthy(e) for e in self.endpoints))
            for endpoint, healthy in zip(self.endpoints, checks, strict=True):
                if healthy and not endpoint.healthy:
                    endpoint.healthy = True
                    self._back.set()
                elif not healthy:
                    self._drain(endpoint)

    async def load(self) -> ServerLoad | None:
        """The summed load of the healthy endpoints, from their ``/metrics``."""
        async def one(endpoint: Endpoint) -> ServerLoad | None:
            try:
                return parse_metrics(await endpoint.probe.get_text("/metrics"))
            except RequestError:
                return None

        loads = [x for x in await asyncio.gather(
            *(one(e) for e in self.endpoints if e.healthy)) if x is not None]
        if not loads:
            return None
        kv = [x.kv_usage for x in loads if x.kv_usage is not None]
        preempted = [x.preemptions for x in loads if x.preemptions is not None]
        return ServerLoad(
            running=sum(x.running for x in loads),
            waiting=sum(x.waiting for x in loads),
            kv_usage=max(kv) if kv else None,
            preemptions=sum(preempted) if preempted else None,
        )

    def summary(self) -> list[dict[str, Any]]:
        """Per-endpoint figures for the run's summary."""
        return [endpoint.summary() for endpoint in self.endpoints]
