"""What vbatch refuses to do to an output, and the lock that keeps one run per output."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

from vbatch import RunConfig, run
from vbatch.output.lock import OutputLock, lock_path

from .conftest import SimulatorProcess, read_jsonl, run_cli, vbatch_cmd, write_jsonl


def rows(count: int) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(count)]


def cli_run(source: Path | str, out: Path, simulator: SimulatorProcess, *extra: str,
            stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        vbatch_cmd("run", str(source), "-o", str(out), "--base-url", simulator.url,
                   "--max-tokens", "2", *extra),
        input=stdin, capture_output=True, timeout=120)


def test_a_second_run_on_a_locked_output_is_refused_at_once(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(5))
    out = tmp_path / "out.jsonl"
    with OutputLock(out):
        refused = cli_run(source, out, simulator)
        assert refused.returncode == 2
        assert f"PID {os.getpid()}" in refused.stderr.decode()
        assert not out.exists() and simulator.stats()["requests_seen"] == 0
    assert not lock_path(out).exists()
    assert run(RunConfig(input=source, output=out, base_url=simulator.url, max_tokens=2,
                         quiet=True)).exit_code == 0
    assert not lock_path(out).exists()


def test_two_runs_started_together_record_each_row_once(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    simulator.configure(latency=0.02)
    source = write_jsonl(tmp_path / "in.jsonl", rows(600))
    out = tmp_path / "out.jsonl"
    args = vbatch_cmd("run", str(source), "-o", str(out), "--base-url", simulator.url,
                      "--max-tokens", "2", "--concurrency", "16", "--ordered", "--quiet")
    first, second = (subprocess.Popen(args, stderr=subprocess.PIPE) for _ in range(2))
    codes = sorted(process.wait(timeout=120) for process in (first, second))
    for process in (first, second):
        assert process.stderr is not None
        process.stderr.close()
    assert codes == [0, 2]
    assert Counter(r["id"] for r in read_jsonl(out)) == Counter(r["id"] for r in rows(600))


def test_a_file_that_is_not_a_vbatch_output_is_refused_unchanged(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(3))
    important = tmp_path / "important.jsonl"
    important.write_bytes(b'{"a": 1}\n{"b": 2}')
    refused = cli_run(source, important, simulator)
    assert refused.returncode == 2 and b"not a vbatch output" in refused.stderr
    assert important.read_bytes() == b'{"a": 1}\n{"b": 2}'
    linked = tmp_path / "linked.jsonl"
    os.link(source, linked)
    before = source.read_bytes()
    refused = cli_run(source, linked, simulator)
    assert refused.returncode == 2 and b"is the input file" in refused.stderr
    assert source.read_bytes() == before
    assert simulator.stats()["requests_seen"] == 0


def test_unwritable_or_foreign_format_outputs_are_one_clear_line(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(3))
    for out, says in ((tmp_path / "no-such-dir" / "out.jsonl", b"does not exist"),
                      (tmp_path / "out.csv", b"does not write .csv")):
        refused = cli_run(source, out, simulator)
        assert refused.returncode == 2, refused.stderr
        assert says in refused.stderr and b"Traceback" not in refused.stderr
        assert len(refused.stderr.decode().strip().splitlines()) == 1
    assert simulator.stats()["requests_seen"] == 0


def test_piped_input_is_read_once_and_every_row_recorded(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    data = "".join(f'{{"id": "r{i}", "prompt": "q {i}"}}\n' for i in range(20)).encode()
    for source in ("-", "/dev/stdin"):
        out = tmp_path / f"out{len(source)}.jsonl"
        done = cli_run(source, out, simulator, "--input-format", "jsonl", stdin=data)
        assert done.returncode == 0, done.stderr
        assert sorted(r["index"] for r in read_jsonl(out)) == list(range(20))
        assert not list(out.parent.glob(out.name + ".input*"))
        again = cli_run(source, out, simulator, "--input-format", "jsonl", stdin=data)
        assert again.returncode == 0
        assert b"nothing to send: all 20 rows already have a record" in again.stderr
    assert len(read_jsonl(out)) == 20


def test_a_run_that_leaves_rows_without_a_record_does_not_exit_0(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(4))
    out = tmp_path / "out.jsonl"
    config = RunConfig(input=source, output=out, base_url=simulator.url, max_tokens=2,
                       quiet=True)
    result = run(config)
    result.stats.total_rows += 1
    assert result.stats.missing == 1 and result.exit_code == 1
    assert "1 of 5 input rows have no record" in result.stats.summary_text()
    assert run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url,
                   "--max-tokens", "2").returncode == 0


def test_stats_json_and_extra_body_files_are_checked_before_sending(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(3))
    out = tmp_path / "out.jsonl"
    for extra, says in ((("--stats-json", str(tmp_path / "nope" / "s.json")), b"does not exist"),
                        (("--extra-body", f"@{tmp_path / 'missing.json'}"), b"cannot read")):
        refused = cli_run(source, out, simulator, *extra)
        assert refused.returncode == 2, refused.stderr
        assert says in refused.stderr and b"Traceback" not in refused.stderr
    assert simulator.stats()["requests_seen"] == 0 and not out.exists()
