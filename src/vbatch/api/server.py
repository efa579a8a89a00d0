"""``vbatch.Server``: one managed vLLM server kept for many calls of :func:`vbatch.generate`.

The server runs on an event loop in a thread of its own, so it outlives each call and is
watched (restarted if it dies) between them. It is stopped when the ``with`` block ends, by
:meth:`Server.stop`, and when the interpreter exits; its guard process stops it if the
interpreter is killed.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from vbatch.defaults import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_STARTUP_TIMEOUT,
    DEFAULT_TENSOR_PARALLEL_SIZE,
)
from vbatch.servers.default_model import cache_dir, resolve_model
from vbatch.servers.options import ServerOptions
from vbatch.servers.process import VllmProcess, free_port

__all__ = ["Server"]


class Server:
    """A vLLM server of ``model`` (the embedded default model when None; with ``pooling``, the
    embedded pooling model and vLLM's pooling runner) on loopback, without an API key. The
    options are the managed server's options of a run (``vbatch run --help``): None leaves the
    choice to vbatch (the CPU's batch limits, the model's context); ``extra_args`` are
    ``vllm serve`` flags. Use as a context manager (sync or async), or :meth:`start` and
    :meth:`stop`."""

    def __init__(self, model: str | None = None, *, port: int | None = None,
                 log_path: str | Path | None = None, quiet: bool = False,
                 pooling: bool = False, max_model_len: int | None = None,
                 gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
                 tensor_parallel_size: int = DEFAULT_TENSOR_PARALLEL_SIZE,
                 max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
                 startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
                 max_restarts: int = DEFAULT_MAX_RESTARTS, extra_args: Sequence[str] = ()):
        self._model = model
        self._port = port
        self._log_path = Path(log_path) if log_path is not None else None
        self._quiet = quiet
        self._pooling = pooling
        self._options: dict[str, Any] = {
            "max_model_len": max_model_len, "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size, "max_num_seqs": max_num_seqs,
            "max_num_batched_tokens": max_num_batched_tokens,
            "startup_timeout": startup_timeout, "max_restarts": max_restarts,
            "extra_args": tuple(extra_args)}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: VllmProcess | None = None

    @property
    def url(self) -> str:
        """The OpenAI API of the running server (``http://127.0.0.1:PORT/v1``)."""
        if self._server is None:
            raise RuntimeError("the server is not running: use 'with Server(...)' or start()")
        return self._server.api_url

    @property
    def model(self) -> str:
        """The model name requests use."""
        if self._server is None:
            raise RuntimeError("the server is not running")
        return self._server.options.name

    def start(self) -> Server:
        """Start the server and wait until it serves (minutes, the first time on a CPU)."""
        if self._server is not None:
            return self
        model, served_name = resolve_model(self._model, self._pooling)
        port = self._port or free_port("127.0.0.1")
        options = ServerOptions(
            model=model, served_model_name=served_name, port=port,
            runner="pooling" if self._pooling else None,
            log_path=self._log_path or cache_dir() / "logs" / f"server-{port}.log",
            **self._options)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="vbatch-server", daemon=True)
        thread.start()
        server = VllmProcess(options, quiet=self._quiet)
        try:
            asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            raise
        self._loop, self._thread, self._server = loop, thread, server
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stop the server (its whole process group); nothing when it is not running."""
        server, loop, thread = self._server, self._loop, self._thread
        if server is None or loop is None or thread is None:
            return
        self._server = None
        atexit.unregister(self.stop)
        try:
            asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> Server:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)
