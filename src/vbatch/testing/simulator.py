"""A simulator of vLLM's OpenAI-compatible server as a process, for load, fault and
concurrency tests over real HTTP.

It serves what :class:`~vbatch.testing.behaviour.SimulatedServer` answers on
``/v1/chat/completions``, ``/v1/completions``, a pooling model's routes (``/v1/embeddings``,
``/score``, ``/rerank``, ``/classify``, ...), ``/v1/models``, ``/tokenize``, ``/metrics`` and
``/health``. Its counters (peak in-flight, requests seen) are
at ``/sim/stats``; ``/sim/config`` changes the behaviour of a running simulator and
``/sim/requests`` shows the last request bodies.

Run it with ``vbatch simulate --port 0`` (or ``python -m vbatch.testing.command``); it prints
the URL it listens on, always on loopback.
"""

from __future__ import annotations

import asyncio
import socket

import orjson
from aiohttp import web

from vbatch.testing.behaviour import Answer, SimConfig, SimulatedServer
from vbatch.testing.pooling import POOLING_ROUTES

__all__ = ["bind_loopback", "serve", "simulator_app"]


def _response(answer: Answer) -> web.Response:
    if isinstance(answer.body, str):
        return web.Response(text=answer.body, status=answer.status, content_type="text/plain")
    return web.Response(body=answer.encoded(), status=answer.status,
                        content_type="application/json", headers=answer.headers)


def simulator_app(server: SimulatedServer) -> web.Application:
    """The aiohttp application that serves ``server``."""

    async def complete(request: web.Request, chat: bool) -> web.Response:
        answer = await server.complete(await request.read(),
                                       request.headers.get("Authorization"), chat)
        if answer.dropped:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        return _response(answer)

    async def chat(request: web.Request) -> web.Response:
        return await complete(request, chat=True)

    async def completions(request: web.Request) -> web.Response:
        return await complete(request, chat=False)

    async def pooling(request: web.Request) -> web.Response:
        return _response(server.pool(request.path, await request.read(),
                                     request.headers.get("Authorization")))

    async def models(request: web.Request) -> web.Response:
        return _response(server.models(request.headers.get("Authorization")))

    async def version(request: web.Request) -> web.Response:
        return _response(server.version())

    async def tokenize(request: web.Request) -> web.Response:
        return _response(server.tokenize(await request.read()))

    async def metrics(request: web.Request) -> web.Response:
        return _response(server.metrics())

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def stats(request: web.Request) -> web.Response:
        return _response(Answer(200, server.stats()))

    async def reset(request: web.Request) -> web.Response:
        server.reset()
        return _response(Answer(200, {"reset": True}))

    async def configure(request: web.Request) -> web.Response:
        return _response(server.configure(orjson.loads(await request.read())))

    async def last_requests(request: web.Request) -> web.Response:
        return _response(Answer(200, list(server.requests)))

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    for path in POOLING_ROUTES:
        app.router.add_post(path, pooling)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/version", version)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/sim/stats", stats)
    app.router.add_post("/sim/reset", reset)
    app.router.add_post("/sim/config", configure)
    app.router.add_get("/sim/requests", last_requests)
    return app


def bind_loopback(port: int = 0, host: str = "127.0.0.1") -> socket.socket:
    """A listening socket on loopback (``port`` 0 picks a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def serve(config: SimConfig, port: int = 0, host: str = "127.0.0.1") -> None:
    """Serve until cancelled, printing ``... listening on URL`` once ready."""
    app = simulator_app(SimulatedServer(config))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = bind_loopback(port, host)
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    actual = sock.getsockname()[1]
    print(f"vbatch simulator listening on http://{host}:{actual}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
