"""The live view under a real pseudo-terminal (replayed in a terminal emulator, pyte), the
plain and JSON log lines, and the timeline's segments."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import termios
from pathlib import Path

import pyte
import pytest

from .conftest import SimulatorProcess, read_jsonl, run_cli, vbatch_cmd, write_jsonl


def run_in_terminal(args: list[str], columns: int, rows: int = 60) -> str:
    """``vbatch ARGS`` on a pseudo-terminal of ``columns`` x ``rows``: the final screen."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(vbatch_cmd(*args), stdin=slave, stdout=slave, stderr=slave,
                               env={**env, "TERM": "xterm-256color"}, close_fds=True)
    os.close(slave)
    output = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert process.wait(timeout=60) == 0
    screen = pyte.Screen(columns, rows)
    pyte.ByteStream(screen).feed(bytes(output))
    return "\n".join(line.rstrip() for line in screen.display)


def prompts(tmp_path: Path, count: int) -> Path:
    return write_jsonl(tmp_path / "prompts.jsonl",
                       [{"id": i, "prompt": f"question {i} " + "word " * (i % 40)}
                        for i in range(count)])


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_the_live_view_fits_the_terminal_and_leaves_no_stale_lines(
        simulator: SimulatorProcess, tmp_path: Path, columns: int) -> None:
    simulator.configure(latency=0.3, capacity=16)
    out = tmp_path / "out.jsonl"
    screen = run_in_terminal(["run", str(prompts(tmp_path, 200)), "-o", str(out),
                              "--base-url", simulator.url, "--max-tokens", "8"], columns)
    view = [line for line in screen.splitlines() if "tok/s" in line]
    bars = [line for line in screen.splitlines() if " rows (" in line]
    assert len(view) == 1 and len(bars) == 1, screen
    assert "200/200 rows (100%)" in bars[0], screen
    assert "in flight" in screen and "rows: 200 ok, 0 failed of 200" in screen
    assert all(len(line) <= columns for line in screen.splitlines())


def test_progress_lines_every_n_seconds_as_json(simulator: SimulatorProcess,
                                                tmp_path: Path) -> None:
    simulator.configure(latency=0.5, capacity=8, completion_tokens=32, token_latency=0.01)
    out = tmp_path / "out.jsonl"
    done = run_cli("run", str(prompts(tmp_path, 48)), "-o", str(out), "--base-url",
                   simulator.url, "--max-tokens", "32", "--log-every", "0.5", "--log-format",
                   "json", "--concurrency", "16")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert len(events) >= 3 and {e["event"] for e in events} == {"progress"}
    assert events[-1]["done"] == events[-1]["total"] == 48
    assert all(e["in_flight"] <= 16 for e in events)
    assert any(e["tokens_per_s"] for e in events[:-1])


def test_each_run_appends_a_segment_to_the_timeline(simulator: SimulatorProcess,
                                                     tmp_path: Path) -> None:
    simulator.configure(latency=0.2, capacity=8)
    source = prompts(tmp_path, 120)
    out = tmp_path / "out.jsonl"
    first = run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url,
                    "--max-tokens", "8")
    assert first.returncode == 0, first.stderr
    second = run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url,
                     "--max-tokens", "8")
    assert second.returncode == 0 and "rows/s" not in second.stderr.split("rows:")[0]
    lines = read_jsonl(tmp_path / "out.jsonl.timeline.jsonl")
    headers = [line for line in lines if "segment" in line]
    assert [h["segment"] for h in headers] == [1, 2]
    assert headers[1]["already_done"] == 120
    samples = lines[1:lines.index(headers[1])]
    assert len(samples) >= 3
    done = [s["rows_done"] for s in samples]
    assert done == sorted(done) and done[-1] == 120
    assert samples[-1]["servers"][0]["url"] == simulator.url
    assert any(s["servers"][0]["running"] for s in samples)
