"""The chaos suite: kill -9 at random instants for every output kind, two writers on one file
(by symbolic link and by hard link, started at once), a disk full before the run, and every
file vbatch writes found already there and not vbatch's. Each ends with one record per row,
or a one-line refusal with the foreign file unchanged."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from .conftest import SimulatorProcess, read_jsonl, small_tmpfs, vbatch_cmd, write_jsonl

ROWS = 240
UNRELATED = b"not vbatch's\n"


def rows() -> list[dict[str, str]]:
    return [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(ROWS)]


def batch() -> list[dict[str, object]]:
    return [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "sim-model", "max_tokens": 3,
                      "messages": [{"role": "user", "content": f"question {i}"}]}}
            for i in range(ROWS)]


GENERATE = """
import json, sys, vbatch
rows = [json.loads(line) for line in open(sys.argv[1])]
vbatch.generate(rows, cache=sys.argv[2], base_url=sys.argv[3], max_tokens=3, concurrency=16,
                progress=False)
"""


def command(kind: str, tmp_path: Path, url: str) -> tuple[list[str], Path, bytes | None]:
    """The command of a run of ``kind``, the file its records end in, and its stdin."""
    source = write_jsonl(tmp_path / "in.jsonl", batch() if kind == "run-batch" else rows())
    common = ["--base-url", url, "--max-tokens", "3", "--concurrency", "16", "--quiet"]
    if kind == "run-batch":
        out = tmp_path / "out.jsonl"
        return vbatch_cmd("run-batch", "-i", str(source), "-o", str(out), *common), out, None
    if kind == "generate":
        out = tmp_path / "cache.jsonl"
        return [sys.executable, "-c", GENERATE, str(source), str(out), url], out, None
    if kind == "stdin":
        out = tmp_path / "out.jsonl"
        return (vbatch_cmd("run", "-", "-o", str(out), *common), out, source.read_bytes())
    out = tmp_path / ("out.parquet" if kind == "parquet" else "out.jsonl")
    extra = ["--ordered"] if kind == "ordered" else []
    return vbatch_cmd("run", str(source), "-o", str(out), *common, *extra), out, None


def ids_in(out: Path) -> Counter[str]:
    if out.suffix == ".parquet":
        return Counter(pd.read_parquet(out)["id"])
    key = "custom_id" if "custom_id" in read_jsonl(out)[0] else "id"
    return Counter(record[key] for record in read_jsonl(out))


@pytest.mark.parametrize("trial", range(2))
@pytest.mark.parametrize("kind", ["jsonl", "ordered", "parquet", "run-batch", "stdin",
                                  "generate"])
def test_kill_9_at_a_random_instant_then_rerun(simulator: SimulatorProcess, tmp_path: Path,
                                               kind: str, trial: int) -> None:
    simulator.configure(latency=0.03)
    args, out, stdin = command(kind, tmp_path, simulator.url)
    chance = random.Random(f"{kind}-{trial}")
    process = subprocess.Popen(args, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
    if stdin is not None:
        assert process.stdin is not None
        process.stdin.write(stdin)
        process.stdin.close()
    time.sleep(chance.uniform(0.05, 1.2))
    process.send_signal(signal.SIGKILL)
    process.wait()
    again = subprocess.run(args, input=stdin, capture_output=True, timeout=180)
    assert again.returncode == 0, again.stderr.decode()
    assert ids_in(out) == Counter(f"r{i}" for i in range(ROWS))
    leftovers = [p.name for p in tmp_path.iterdir()
                 if p.name.endswith(".lock") or ".input" in p.name]
    assert leftovers == []


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_two_runs_started_at_once_on_two_names_of_one_file(
        simulator: SimulatorProcess, tmp_path: Path, how: str) -> None:
    simulator.configure(latency=0.02)
    source = write_jsonl(tmp_path / "in.jsonl", rows())
    first = tmp_path / "first.jsonl"
    first.touch()
    second = tmp_path / "second.jsonl"
    if how == "symlink":
        second.symlink_to(first)
    else:
        os.link(first, second)
    runs = [subprocess.Popen(vbatch_cmd("run", str(source), "-o", str(out), "--base-url",
                                        simulator.url, "--max-tokens", "2", "--quiet"),
                             stderr=subprocess.PIPE)
            for out in (first, second)]
    codes = []
    for process in runs:
        _, stderr = process.communicate(timeout=120)
        codes.append(process.returncode)
        # The second is refused by the lock, or, when the first is already done, because the
        # file is no output of its name (no manifest of that name beside it).
        assert process.returncode == 0 or (b"being written by another vbatch run" in stderr
                                           or b"is not a vbatch output" in stderr), stderr
    assert sorted(codes) == [0, 2]
    assert simulator.stats()["requests_seen"] == ROWS
    assert ids_in(first) == Counter(f"r{i}" for i in range(ROWS))


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "full", "64k") as mount:
        descriptor = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(descriptor, b"x" * 4096)
        except OSError:
            pass
        finally:
            os.close(descriptor)
        yield mount


def test_a_disk_full_before_the_run_is_one_line_and_leaves_nothing(
        simulator: SimulatorProcess, tmp_path: Path, full_disk: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows())
    done = subprocess.run(vbatch_cmd("run", str(source), "-o", str(full_disk / "out.jsonl"),
                                     "--base-url", simulator.url),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode in (2, 4), done.stderr
    assert "Traceback" not in done.stderr and "No space left" in done.stderr
    assert simulator.stats()["requests_seen"] == 0
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


# Every file vbatch writes beside an output, for a run whose -o is out.jsonl (out.parquet for
# the journal) and whose input is read from stdin (an OpenAI Batch file for the error file);
# the copy of stdin is OUTPUT.input.PID, so a file at OUTPUT.input (the name of older
# versions) is no concern.
FILES = ["out.jsonl", "out.parquet.journal.jsonl", "out.jsonl.manifest.json", "out.jsonl.lock",
         "out.jsonl.timeline.jsonl", "errors.jsonl", "stats.json", "out.jsonl.input"]
# The files a run leaves alone and goes on without (it says so for the timeline).
LEFT_ALONE = {"out.jsonl.timeline.jsonl", "out.jsonl.input"}


@pytest.mark.parametrize("how", ["link", "file"])
@pytest.mark.parametrize("name", FILES)
def test_every_file_vbatch_writes_leaves_a_foreign_one_unchanged(
        simulator: SimulatorProcess, tmp_path: Path, name: str, how: str) -> None:
    target = tmp_path / "precious.txt"
    target.write_bytes(UNRELATED)
    place = tmp_path / name
    if how == "link":
        place.symlink_to(target)
    else:
        place.write_bytes(UNRELATED)
    out = tmp_path / ("out.parquet" if name.startswith("out.parquet") else "out.jsonl")
    if name == "errors.jsonl":
        source = write_jsonl(tmp_path / "batch.jsonl", batch()[:5])
        args = ["run-batch", "-i", "-", "-o", str(out), "--error-file", str(place)]
    else:
        source = write_jsonl(tmp_path / "rows.jsonl", rows()[:5])
        args = ["run", "-", "-o", str(out), "--stats-json", str(tmp_path / "stats.json")]
    done = subprocess.run(vbatch_cmd(*args, "--base-url", simulator.url),
                          input=source.read_bytes(), capture_output=True, timeout=60)
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr
    assert target.read_bytes() == UNRELATED
    if how == "file":
        assert place.read_bytes() == UNRELATED, stderr
    if name in LEFT_ALONE:
        assert done.returncode == 0, stderr
        assert "no timeline" in stderr or name != "out.jsonl.timeline.jsonl"
        assert len(read_jsonl(out)) == 5
    else:
        assert done.returncode == 2 and "not changed" in stderr, stderr
        assert simulator.stats()["requests_seen"] == 0
