"""No file that is not vbatch's is touched, and one writer per file: the error file, the stats
file, the lock and the timeline when they name something else, and an output reached by a
symbolic link or a hard link while another run writes it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from vbatch import OutputLockedError, RunConfig, run
from vbatch.output.lock import OutputLock

from .conftest import SimulatorProcess, read_jsonl, vbatch_cmd, write_jsonl

UNRELATED = b"my notes, not vbatch's\n"


def rows(count: int) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(count)]


def batch_lines(count: int) -> list[dict[str, object]]:
    """Lines of a batch file; every third one the simulator refuses (HTTP 400)."""
    return [{"custom_id": f"request-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "sim-model", "max_tokens": 4, "messages": [
                 {"role": "user", "content": f"{'SIM_REJECT ' if i % 3 == 1 else ''}hello {i}"}]}}
            for i in range(count)]


def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(vbatch_cmd(*args), capture_output=True, timeout=120)


def refused_unchanged(done: subprocess.CompletedProcess[bytes], simulator: SimulatorProcess,
                      *files: tuple[Path, bytes]) -> str:
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert "Traceback" not in stderr and "not changed" in stderr, stderr
    assert simulator.stats()["requests_seen"] == 0
    for path, content in files:
        assert path.read_bytes() == content, path
    return stderr


@pytest.mark.parametrize("option", ["--error-file", "--stats-json"])
def test_a_side_file_naming_the_input_is_refused(simulator: SimulatorProcess, tmp_path: Path,
                                                 option: str) -> None:
    source = write_jsonl(tmp_path / "batch.jsonl", batch_lines(3))
    before = source.read_bytes()
    done = cli("run-batch", "-i", str(source), "-o", str(tmp_path / "out.jsonl"),
               "--base-url", simulator.url, option, str(source))
    assert "is the input" in refused_unchanged(done, simulator, (source, before))


@pytest.mark.parametrize("option", ["--error-file", "--stats-json"])
def test_a_side_file_that_is_not_vbatchs_is_refused(simulator: SimulatorProcess,
                                                    tmp_path: Path, option: str) -> None:
    source = write_jsonl(tmp_path / "batch.jsonl", batch_lines(3))
    notes = tmp_path / "notes.txt"
    notes.write_bytes(UNRELATED)
    done = cli("run-batch", "-i", str(source), "-o", str(tmp_path / "out.jsonl"),
               "--base-url", simulator.url, option, str(notes))
    assert "not a file vbatch wrote" in refused_unchanged(done, simulator, (notes, UNRELATED))


def test_side_files_vbatch_wrote_are_rewritten(simulator: SimulatorProcess,
                                               tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "batch.jsonl", batch_lines(20))
    errors, stats = tmp_path / "errors.jsonl", tmp_path / "stats.json"
    for output in ("one.jsonl", "two.jsonl"):
        done = cli("run-batch", "-i", str(source), "-o", str(tmp_path / output), "--base-url",
                   simulator.url, "--error-file", str(errors), "--stats-json", str(stats))
        assert done.returncode == 0, done.stderr
        assert json.loads(stats.read_text())["rows_total"] == 20
        assert len(read_jsonl(errors)) == 7
        assert {line["custom_id"] for line in read_jsonl(errors)} | {
            line["custom_id"] for line in read_jsonl(tmp_path / output)} == {
            f"request-{i}" for i in range(20)}


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(3))
    target = tmp_path / "precious.txt"
    target.write_bytes(UNRELATED)
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.lock").symlink_to(target)
    done = cli("run", str(source), "-o", str(out), "--base-url", simulator.url)
    assert "symbolic link" in refused_unchanged(done, simulator, (target, UNRELATED))


def test_a_timeline_that_is_a_link_or_not_vbatchs_is_left_alone(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(4))
    target = tmp_path / "precious.txt"
    target.write_bytes(UNRELATED)
    linked = tmp_path / "linked.jsonl"
    (tmp_path / "linked.jsonl.timeline.jsonl").symlink_to(target)
    foreign = tmp_path / "foreign.jsonl"
    (tmp_path / "foreign.jsonl.timeline.jsonl").write_bytes(UNRELATED)
    for out in (linked, foreign):
        done = cli("run", str(source), "-o", str(out), "--base-url", simulator.url)
        assert done.returncode == 0, done.stderr
        assert b"no timeline" in done.stderr
        assert len(read_jsonl(out)) == 4
    assert target.read_bytes() == UNRELATED
    assert (tmp_path / "foreign.jsonl.timeline.jsonl").read_bytes() == UNRELATED


def test_an_output_reached_by_a_symbolic_link_is_locked_as_itself(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(3))
    real = tmp_path / "real.jsonl"
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    with OutputLock(real), pytest.raises(OutputLockedError):
        run(RunConfig(input=source, output=link, base_url=simulator.url, quiet=True))
    assert simulator.stats()["requests_seen"] == 0
    assert run(RunConfig(input=source, output=link, base_url=simulator.url,
                         quiet=True)).exit_code == 0
    assert len(read_jsonl(real)) == 3


def test_an_output_reached_by_a_hard_link_is_locked_as_itself(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(3))
    first = tmp_path / "first.jsonl"
    first.touch()
    second = tmp_path / "second.jsonl"
    os.link(first, second)
    with OutputLock(first), pytest.raises(OutputLockedError, match="hard link"):
        run(RunConfig(input=source, output=second, base_url=simulator.url, quiet=True))
    assert simulator.stats()["requests_seen"] == 0 and first.read_bytes() == b""


def test_a_server_log_that_is_a_link_is_refused_before_the_server_starts(
        tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(2))
    target = tmp_path / "precious.txt"
    target.write_bytes(UNRELATED)
    (tmp_path / "out.jsonl.server.log").symlink_to(target)
    done = cli("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--max-model-len", "256")
    assert done.returncode == 2, done.stderr
    assert b"the managed server's log" in done.stderr and b"Traceback" not in done.stderr
    assert target.read_bytes() == UNRELATED and not (tmp_path / "out.jsonl").exists()
