"""Writing the output fails midway (a full disk): one clear error, nothing torn or doubled."""

from __future__ import annotations

import errno
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from vbatch.errors import OutputWriteError
from vbatch.output.writer import ResultWriter

from .conftest import SimulatorProcess, read_jsonl, small_tmpfs, vbatch_cmd, write_jsonl


def record(i: int) -> dict[str, object]:
    return {"id": f"r{i}", "index": i, "status": "ok", "text": "x" * 50}


def test_a_short_write_then_enospc_leaves_no_partial_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.jsonl"
    writer = ResultWriter(path)
    writer.open()
    writer.add(record(0))
    writer.flush()
    real_write = os.write
    calls = []

    def short_then_full(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", short_then_full)
    for i in range(1, 4):
        writer.add(record(i))
    with pytest.raises(OutputWriteError, match="No space left"):
        writer.flush()
    with pytest.raises(OutputWriteError):
        writer.add(record(9))
        writer.flush()
    monkeypatch.setattr(os, "write", real_write)
    with pytest.raises(OutputWriteError):
        writer.close()
    assert [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()] == ["r0"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small", "96k") as mount:
        yield mount


def test_disk_full_stops_with_exit_4_and_a_rerun_completes(
        simulator: SimulatorProcess, small_disk: Path, tmp_path: Path) -> None:
    simulator.configure(completion_tokens=200, latency=0.02)
    source = write_jsonl(tmp_path / "in.jsonl",
                         [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(300)])
    out = small_disk / "out.jsonl"
    args = vbatch_cmd("run", str(source), "-o", str(out), "--base-url", simulator.url,
                      "--max-tokens", "200", "--concurrency", "4", "--ordered", "--quiet")
    full = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert full.returncode == 4, full.stderr
    assert "No space left on device" in full.stderr and "Traceback" not in full.stderr
    kept = read_jsonl(out)
    assert 0 < len(kept) < 300
    assert max(Counter(r["id"] for r in kept).values()) == 1
    # Sending stops at the first failed write: what was sent but not recorded is what was in
    # flight or buffered then, not the rest of the input.
    assert simulator.stats()["requests_seen"] - len(kept) < 60
    assert sorted(p.name for p in small_disk.iterdir()) == [
        "out.jsonl", "out.jsonl.manifest.json", "out.jsonl.timeline.jsonl"]
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    records = read_jsonl(out)
    assert [r["index"] for r in records] == list(range(300))
    by_id = {r["id"]: r for r in kept}
    assert all(records[r["index"]] == r for r in by_id.values())


def test_a_program_run_on_a_full_disk_stops_and_its_rerun_replays_the_answered_calls(
        simulator: SimulatorProcess, small_disk: Path, tmp_path: Path) -> None:
    simulator.configure(completion_tokens=60, latency=0.02)
    program = tmp_path / "two.py"
    program.write_text('''
async def two(row, llm):
    first = await llm.chat(row["prompt"], max_tokens=60)
    second = await llm.chat("again " + first.text, max_tokens=60)
    return {"first": first.text, "second": second.text}
''')
    source = write_jsonl(tmp_path / "in.jsonl",
                         [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(150)])
    out = small_disk / "out.jsonl"
    args = vbatch_cmd("run", str(source), "-o", str(out), "--base-url", simulator.url,
                      "--program", f"{program}:two", "--temperature", "0",
                      "--concurrency", "4", "--quiet")
    full = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert full.returncode == 4, full.stderr
    assert "No space left on device" in full.stderr and "Traceback" not in full.stderr
    kept = read_jsonl(out)
    assert len(kept) < 150
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    rerun = subprocess.run([*args[:-1], "--log-every", "0.1"], capture_output=True,
                           text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    records = read_jsonl(out)
    assert sorted(r["index"] for r in records) == list(range(150))
    assert {r["status"] for r in records} == {"ok"}
    assert "replayed from the calls journal" in rerun.stderr
    assert not (small_disk / "out.jsonl.calls.jsonl").exists()
