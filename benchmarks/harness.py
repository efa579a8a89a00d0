"""Shared pieces of the benchmarks: inputs, a pinned simulator, measured client processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def machine() -> str:
    """The CPU every figure of a run comes from: its model, cores and AVX flags."""
    from vbatch.servers.cpu import cpu_info

    info = cpu_info()
    emulated = " (emulating an AVX2-only CPU)" if os.environ.get("VBATCH_EMULATE_AVX2") else ""
    return f"CPU: {info.model}, {os.cpu_count()} cores; flags: {info.summary}{emulated}"


def emulate_avx2() -> None:
    """From here on, child processes run as on an AVX2-only CPU (``avx2/sitecustomize.py``)."""
    path = os.pathsep.join(filter(None, [str(ROOT / "benchmarks" / "avx2"),
                                         os.environ.get("PYTHONPATH")]))
    os.environ.update({"PYTHONPATH": path, "VBATCH_EMULATE_AVX2": "1",
                       "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"})


def write_prompts(path: Path, count: int) -> Path:
    """``count`` short chat prompts, one JSON object a line."""
    if path.exists():
        with open(path, "rb") as handle:
            if sum(1 for _ in handle) == count:
                return path
    with open(path, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({"id": f"r{i}", "prompt": f"Say something about number {i}"})
                         + "\n")
    return path


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    """``command`` pinned to one core with taskset, when taskset and the core exist."""
    if cpu is None or shutil.which("taskset") is None or cpu >= (os.cpu_count() or 1):
        return command
    return ["taskset", "-c", str(cpu), *command]


class Simulator:
    """A ``vbatch simulate`` process for a benchmark."""

    def __init__(self, *args: str, cpu: int | None = 1):
        command = pinned(cpu, [PYTHON, "-m", "vbatch.testing.command", "--port", "0", *args])
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().rsplit(" ", 1)[1].strip()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class Measured:
    """Wall time, CPU time and peak RSS of one client process."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int


def measure(command: list[str], cpu: int | None = 0, kill_after: float | None = None
            ) -> Measured:
    """Run ``command`` (pinned to ``cpu``) and measure it with wait4's resource usage.

    With ``kill_after``, a command still running then is killed (``returncode`` -9) and
    measured as it was.
    """
    start = time.perf_counter()
    process = subprocess.Popen(pinned(cpu, command), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL if kill_after else subprocess.PIPE)
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG if kill_after else 0)
        if pid:
            break
        if kill_after is not None and time.perf_counter() - start > kill_after:
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.05)
    wall = time.perf_counter() - start
    stderr = process.stderr.read().decode() if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1) and not (kill_after and code == -9):
        raise RuntimeError(f"{command[:4]} failed ({code}): {stderr[-2000:]}")
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code)


def vbatch_command(source: Path, target: Path, url: str, *extra: str) -> list[str]:
    for stale in (target, target.with_name(target.name + ".manifest.json")):
        stale.unlink(missing_ok=True)
    return [PYTHON, "-m", "vbatch", "run", str(source), "-o", str(target), "--base-url", url,
            "--quiet", "--max-tokens", "8", *extra]


def baseline_command(source: Path, target: Path, url: str, model: str = "sim-model",
                     max_tokens: int = 8) -> list[str]:
    return [PYTHON, str(ROOT / "benchmarks" / "baseline_openai.py"), str(source), str(target),
            url, model, str(max_tokens)]
