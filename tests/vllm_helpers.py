"""Helpers for the tests against a real vLLM server on the CPU."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil


class ServeProcess:
    """A ``vbatch serve`` subprocess with the embedded default model."""

    def __init__(self, log: Path, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vbatch", "serve", "--port", "0", "--log", str(log), *args],
            stdout=subprocess.PIPE, text=True,
        )
        self.url = ""
        try:
            self._wait_ready(log)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, log: Path) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"vbatch serve exited; log: {log}\n{log.read_text()[-3000:]}")
            if " at http" in line:
                self.url = line.rsplit(" ", 1)[1].strip()
                return
        raise RuntimeError("vbatch serve did not get ready")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def descendants(pid: int) -> list[psutil.Process]:
    """Every live process below ``pid``."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` still running (zombies count as gone)."""
    result = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                result.append(process)
        except psutil.NoSuchProcess:
            continue
    return result


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until ``processes`` are gone; returns those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(processes):
            return []
        time.sleep(0.25)
    return alive(processes)


def api_servers_below(pid: int) -> list[psutil.Process]:
    """The vLLM API server processes started by the vbatch process ``pid``."""
    found = []
    for process in descendants(pid):
        try:
            command = " ".join(process.cmdline())
            guard = "vbatch.servers.guard" in command
            if "vllm.entrypoints.openai.api_server" in command and not guard:
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_for_lines(path: Path, count: int, timeout: float) -> int:
    """Wait until ``path`` has at least ``count`` lines; returns how many it has."""
    deadline = time.monotonic() + timeout
    lines = 0
    while time.monotonic() < deadline:
        if path.exists():
            with open(path, "rb") as handle:
                lines = sum(1 for _ in handle)
            if lines >= count:
                return lines
        time.sleep(0.2)
    return lines
