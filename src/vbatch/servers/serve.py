"""``vbatch serve``: a managed vLLM server in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from vbatch.servers.default_model import cache_dir, resolve_model
from vbatch.servers.options import ServerOptions
from vbatch.servers.process import VllmProcess, free_port


def serve_foreground(
    model: str | None,
    *,
    port: int = 8000,
    log_path: Path | None = None,
    pooling: bool = False,
    **options: Any,
) -> int:
    """Start a server for ``model`` (the default model when None; with ``pooling``, the
    embedded pooling model, on vLLM's pooling runner), block until a signal.

    Returns the exit status: 0 after a clean stop.
    """
    model, served_name = resolve_model(model, pooling)
    port = port or free_port(options.get("host", "127.0.0.1"))
    server = ServerOptions(
        model=model,
        served_model_name=served_name,
        runner="pooling" if pooling else None,
        port=port,
        log_path=log_path or cache_dir() / "logs" / f"serve-{port}.log",
        **options,
    )
    return asyncio.run(_serve(server))


async def _serve(options: ServerOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if not options.api_key and options.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"vbatch: warning: serving on {options.host} without an API key: anyone who can "
              "reach this machine can use the server (set VBATCH_API_KEY)", file=sys.stderr,
              flush=True)
    async with VllmProcess(options) as server:
        print(f"vbatch: serving {options.name} at {server.api_url}", flush=True)
        if options.api_key:
            print("vbatch: clients must send the API key given with --api-key", flush=True)
        await server.serve_until_stopped(stop)
    print("vbatch: server stopped", file=sys.stderr, flush=True)
    return 0
