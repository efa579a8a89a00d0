"""Fixtures: the server doubles (a simulator process on loopback, the same in process), a real
vLLM server, and helpers to drive them."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vbatch import RunConfig, RunResult, arun, run
from vbatch.servers.cpu import choose_dtype, cpu_info
from vbatch.testing.behaviour import SimConfig, SimulatedServer
from vbatch.testing.fake import SimulatedTransport


def pytest_report_header() -> list[str]:
    """The CPU, so that a slow run of the real-server tests explains itself."""
    info = cpu_info()
    dtype = choose_dtype(info)
    return [f"CPU: {info.model}, {os.cpu_count()} cores; flags: {info.summary}; "
            f"CPU vLLM dtype: {dtype.dtype} ({dtype.reason})"]


class SimulatorProcess:
    """A running ``vbatch simulate`` subprocess."""

    def __init__(self, process: subprocess.Popen[str], url: str):
        self.process = process
        self.url = url
        self.root = url.removesuffix("/v1")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.root + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def configure(self, **settings: Any) -> Any:
        return self._call("POST", "/sim/config", settings)

    def reset(self) -> None:
        self._call("POST", "/sim/reset", {})

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/sim/stats")  # type: ignore[no-any-return]

    def requests(self) -> list[dict[str, Any]]:
        return self._call("GET", "/sim/requests")  # type: ignore[no-any-return]

    def run(self, config: RunConfig, **options: Any) -> RunResult:
        return run(config, **options)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_simulator(*args: str, port: int = 0) -> SimulatorProcess:
    """Start a simulator on a loopback port (0: a free one) and wait until it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vbatch.testing.command", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return SimulatorProcess(process, line.rsplit(" ", 1)[1].strip())


# Every setting of the simulator, at its default.
SIM_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SimConfig)}


@pytest.fixture(scope="session")
def simulator_session() -> Iterator[SimulatorProcess]:
    sim = start_simulator()
    yield sim
    sim.stop()


@pytest.fixture
def simulator(simulator_session: SimulatorProcess) -> SimulatorProcess:
    """The shared simulator, every setting reset to its default for each test."""
    answer = simulator_session.configure(**SIM_DEFAULTS)
    assert {name: answer.get(name, value) for name, value in SIM_DEFAULTS.items()} == SIM_DEFAULTS
    simulator_session.reset()
    return simulator_session


class InProcessServer:
    """The simulator's behaviour without a process or a socket (vbatch.testing.fake): the same
    ``configure``/``stats``/``requests`` as :class:`SimulatorProcess`; ``run`` runs vbatch
    with every request sent to it."""

    url = "http://simulated.invalid/v1"

    def __init__(self) -> None:
        self.server = SimulatedServer(SimConfig())
        self.transport = SimulatedTransport(self.server)

    def configure(self, **settings: Any) -> None:
        answer = self.server.configure(settings)
        assert answer.status == 200, answer.body

    def reset(self) -> None:
        self.server.reset()

    def stats(self) -> dict[str, Any]:
        return self.server.stats()

    def requests(self) -> list[dict[str, Any]]:
        return list(self.server.requests)

    def run(self, config: RunConfig, **options: Any) -> RunResult:
        return run(config, transport=self.transport, **options)

    async def arun(self, config: RunConfig, **options: Any) -> RunResult:
        return await arun(config, transport=self.transport, **options)


@pytest.fixture
def fake_server() -> InProcessServer:
    """A fresh in-process server double for each test."""
    return InProcessServer()


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    # Split on "\n" only: model text may hold U+2028, U+0085 and the like, which JSON keeps
    # unescaped and str.splitlines() would split on.
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def vbatch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vbatch", *args]


def run_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        vbatch_cmd(*args), capture_output=True, text=True, timeout=timeout, env=full_env
    )


VLLM_TEST_MAX_MODEL_LEN = 512


@pytest.fixture(scope="session")
def vllm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real vLLM server (CPU, embedded default model, context 512) for the whole session;
    ``VBATCH_TEST_VLLM_URL`` names one already running (``vbatch serve --max-model-len 512``),
    to rerun a few tests without waiting for a start."""
    from .vllm_helpers import ServeProcess

    running = os.environ.get("VBATCH_TEST_VLLM_URL")
    if running:
        yield running
        return
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    server = ServeProcess(log, "--max-model-len", str(VLLM_TEST_MAX_MODEL_LEN))
    yield server.url
    server.stop()


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (made here) for the time of the block; the test
    is skipped where mounting needs a root this machine does not give."""
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
