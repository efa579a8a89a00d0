"""Crash safety and resume: nothing lost, nothing duplicated."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from vbatch import ConfigError, ManifestMismatchError, OutputError, RunConfig, run
from vbatch.output.ledger import read_output, repair_torn_tail

from .conftest import (
    InProcessServer,
    SimulatorProcess,
    read_jsonl,
    run_cli,
    vbatch_cmd,
    write_jsonl,
)


def rows(count: int) -> list[dict[str, str]]:
    return [{"id": f"row-{i}", "prompt": f"question number {i}"} for i in range(count)]


def test_rerun_skips_finished_rows(fake_server: InProcessServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(50))
    out = tmp_path / "out.jsonl"
    cfg = RunConfig(input=source, output=out, base_url=fake_server.url, quiet=True, max_tokens=3)
    assert fake_server.run(cfg).stats.ok == 50
    fake_server.reset()
    second = fake_server.run(cfg)
    assert second.stats.ok == 0 and second.stats.already_done == 50
    assert fake_server.stats()["requests_seen"] == 0
    assert len(read_jsonl(out)) == 50


def test_torn_last_line_is_repaired_and_redone(fake_server: InProcessServer, tmp_path: Path
                                                ) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(10))
    out = tmp_path / "out.jsonl"
    cfg = RunConfig(input=source, output=out, base_url=fake_server.url, quiet=True, max_tokens=3)
    fake_server.run(cfg)
    lines = out.read_bytes().splitlines(keepends=True)
    torn_id = json.loads(lines[-1])["id"]
    out.write_bytes(b"".join(lines[:-1]) + lines[-1][:25])
    fake_server.reset()
    fake_server.run(cfg)
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in rows(10))
    assert [body["messages"][0]["content"] for body in fake_server.requests()] == [
        next(r["prompt"] for r in rows(10) if r["id"] == torn_id)
    ]


def test_repair_torn_tail_cuts_only_the_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')
    assert repair_torn_tail(path) == 5
    assert path.read_bytes() == b'{"a":1}\n'
    assert repair_torn_tail(path) == 0
    path.write_bytes(b'{"no newline at all"')
    repair_torn_tail(path)
    assert path.read_bytes() == b""


def test_a_file_with_no_record_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('garbage\n{"a": 1}\n{"b": 2}')
    with pytest.raises(OutputError, match=r"out\.jsonl:1"):
        read_output(path, retry_failed=False)
    assert path.read_text() == 'garbage\n{"a": 1}\n{"b": 2}'


def finished_run(server: SimulatorProcess | InProcessServer, tmp_path: Path, count: int
                 ) -> tuple[RunConfig, Path]:
    """The config of a run of ``count`` rows that has completed, and its output."""
    source = write_jsonl(tmp_path / "in.jsonl", rows(count))
    out = tmp_path / "out.jsonl"
    cfg = RunConfig(input=source, output=out, base_url=server.url, quiet=True, max_tokens=3)
    assert server.run(cfg).exit_code == 0
    return cfg, out


def test_torn_line_glued_mid_file_is_removed_and_both_rows_rerun(
        fake_server: InProcessServer, tmp_path: Path) -> None:
    cfg, out = finished_run(fake_server, tmp_path, 10)
    lines = out.read_bytes().splitlines(keepends=True)
    torn, glued = json.loads(lines[4])["id"], json.loads(lines[5])["id"]
    lines[4:6] = [lines[4][:30] + lines[5]]
    out.write_bytes(b"".join(lines))
    fake_server.reset()
    messages = io.StringIO()
    result = asyncio.run(fake_server.arun(cfg.replace(quiet=False), stream=messages))
    assert result.exit_code == 0
    assert "removed 1 damaged lines" in messages.getvalue() and "line 5" in messages.getvalue()
    sent = sorted(body["messages"][0]["content"] for body in fake_server.requests())
    assert sent == sorted(r["prompt"] for r in rows(10) if r["id"] in (torn, glued))
    assert Counter(r["id"] for r in read_jsonl(out)) == Counter(r["id"] for r in rows(10))


def test_second_records_of_an_id_are_removed_on_resume(
        fake_server: InProcessServer, tmp_path: Path) -> None:
    cfg, out = finished_run(fake_server, tmp_path, 10)
    first = out.read_bytes()
    out.chmod(0o600)
    with open(out, "ab") as handle:
        handle.write(first.splitlines(keepends=True)[3] + first.splitlines(keepends=True)[7])
    fake_server.reset()
    result = fake_server.run(cfg)
    assert result.exit_code == 0 and fake_server.stats()["requests_seen"] == 0
    assert out.read_bytes() == first
    assert out.stat().st_mode & 0o777 == 0o600


def test_retry_failed_replaces_failed_records(fake_server: InProcessServer, tmp_path: Path) -> None:
    data = [{"id": f"r{i}", "prompt": f"p {i}"} for i in range(10)]
    source = write_jsonl(tmp_path / "in.jsonl", data)
    out = tmp_path / "out.jsonl"
    cfg = RunConfig(input=source, output=out, base_url=fake_server.url, quiet=True, max_tokens=3,
                    max_retries=0)
    fake_server.configure(fail_first=3, fail_status=500)
    first = fake_server.run(cfg)
    assert first.stats.failed == 3 and first.exit_code == 1
    again = fake_server.run(cfg)
    assert again.stats.done == 0 and again.exit_code == 1
    retried = fake_server.run(cfg.replace(retry_failed=True))
    assert retried.stats.ok == 3 and retried.exit_code == 0
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == sorted(d["id"] for d in data)
    assert {r["status"] for r in records} == {"ok"}


def test_resume_with_other_parameters_is_refused(simulator: SimulatorProcess, tmp_path: Path
                                                  ) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(3))
    out = tmp_path / "out.jsonl"
    cfg = RunConfig(input=source, output=out, base_url=simulator.url, quiet=True, max_tokens=3)
    run(cfg)
    with pytest.raises(ManifestMismatchError, match=r"max_tokens: was 3, now 9"):
        run(cfg.replace(max_tokens=9))
    forced = run(cfg.replace(max_tokens=9, force=True))
    # Every row's request changed: --force sends each again and replaces its record.
    assert (forced.stats.already_done, forced.stats.ok) == (0, 3)
    assert len(read_jsonl(out)) == 3
    result = run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url,
                     "--max-tokens", "5")
    assert result.returncode == 2
    assert "--force" in result.stderr


def test_manifest_never_holds_the_api_key(simulator: SimulatorProcess, tmp_path: Path) -> None:
    simulator.configure(api_key="s3cret-key-123")
    source = write_jsonl(tmp_path / "in.jsonl", rows(2))
    out = tmp_path / "out.jsonl"
    result = run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url,
                     env={"OPENAI_API_KEY": "s3cret-key-123"})
    assert result.returncode == 0, result.stderr
    for path in tmp_path.iterdir():
        assert "s3cret" not in path.read_text()
    assert "s3cret" not in result.stderr + result.stdout
    assert "s3cret" not in repr(RunConfig(input=source, output=out, api_key="s3cret-key-123"))


@pytest.mark.parametrize("trial", range(20))
def test_sigkill_at_random_instants_then_resume(
    simulator: SimulatorProcess, tmp_path: Path, trial: int
) -> None:
    """Killed at a random instant (start-up, mid-run, the --ordered rewrite, after), then
    killed again at a random instant of the resume: the last resume ends with exactly one
    valid record per row, in input order."""
    simulator.configure(latency=0.03)
    data = rows(300)
    source = write_jsonl(tmp_path / "in.jsonl", data)
    out = tmp_path / "out.jsonl"
    args = ["run", str(source), "-o", str(out), "--base-url", simulator.url, "--concurrency",
            "16", "--max-tokens", "3", "--ordered", "--quiet"]
    chance = random.Random(trial)
    for latest in (1.6, 1.0):
        process = subprocess.Popen(vbatch_cmd(*args))
        time.sleep(chance.uniform(0.05, latest))
        process.send_signal(signal.SIGKILL)
        process.wait()
    finished = run_cli(*args)
    assert finished.returncode == 0, finished.stderr
    records = read_jsonl(out)
    assert [r["id"] for r in records] == [d["id"] for d in data]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.jsonl", "out.jsonl", "out.jsonl.manifest.json", "out.jsonl.timeline.jsonl"]


def test_unicode_line_separators_in_text_do_not_break_records(
    fake_server: InProcessServer, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(2))
    out = tmp_path / "out.jsonl"
    record = {"id": "row-0", "index": 0, "status": "ok", "text": "a\u2028b\x85c\x1cd",
              "finish_reason": "stop", "usage": None, "error": None}
    cfg = RunConfig(input=source, output=out, base_url=fake_server.url, quiet=True, max_tokens=3,
                    force=True)
    fake_server.run(cfg)
    out.write_bytes(orjson.dumps(record) + b"\n")
    result = fake_server.run(cfg.replace(ordered=True))
    assert result.stats.already_done == 1 and result.stats.ok == 1
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["row-0", "row-1"]
    assert records[0]["text"] == "a\u2028b\x85c\x1cd"


def test_a_changed_input_is_refused_then_replaced_with_force(
        fake_server: InProcessServer, tmp_path: Path) -> None:
    data = rows(20)
    source = write_jsonl(tmp_path / "in.jsonl", data)
    out = tmp_path / "out.jsonl"
    cfg = RunConfig(input=source, output=out, base_url=fake_server.url, quiet=True, max_tokens=3)
    assert fake_server.run(cfg).exit_code == 0
    data[3]["prompt"] = "a different question"
    data[11]["prompt"] = "another different question"
    write_jsonl(source, data)
    fake_server.reset()
    with pytest.raises(ConfigError, match=r"2 rows .* changed .*row-3, row-11"):
        fake_server.run(cfg)
    assert fake_server.stats()["requests_seen"] == 0
    messages = io.StringIO()
    result = asyncio.run(fake_server.arun(cfg.replace(force=True, quiet=False), stream=messages))
    assert result.exit_code == 0 and result.stats.ok == 2
    assert "sending 2 changed rows again" in messages.getvalue()
    sent = sorted(body["messages"][0]["content"] for body in fake_server.requests())
    assert sent == ["a different question", "another different question"]
    assert Counter(r["id"] for r in read_jsonl(out)) == Counter(r["id"] for r in data)
    fake_server.reset()
    assert fake_server.run(cfg).stats.already_done == 20
    assert fake_server.stats()["requests_seen"] == 0


def test_a_changed_system_message_counts_as_a_change(fake_server: InProcessServer,
                                                     tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(5))
    out = tmp_path / "out.jsonl"
    cfg = RunConfig(input=source, output=out, base_url=fake_server.url, quiet=True, max_tokens=3,
                    system="Be brief.")
    fake_server.run(cfg)
    with pytest.raises(ConfigError):
        fake_server.run(cfg.replace(system="Be verbose.", force=False))


def test_ctrl_c_records_in_flight_rows_and_sends_nothing_new(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    simulator.configure(latency=2.0)
    source = write_jsonl(tmp_path / "in.jsonl", rows(2000))
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        vbatch_cmd("run", str(source), "-o", str(out), "--base-url", simulator.url,
                   "--max-tokens", "2", "--concurrency", "64"),
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while simulator.stats()["requests_seen"] < 64 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Run the same command again to resume" in stderr
    sent = simulator.stats()["requests_seen"]
    assert sent < 64 + 16
    assert len(read_jsonl(out)) >= 64


def test_sigterm_before_sending_is_a_clean_interrupt(tmp_path: Path) -> None:
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        vbatch_cmd("run", str(fifo), "-o", str(tmp_path / "out.jsonl"), "--input-format",
                   "jsonl", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"),
        stderr=subprocess.PIPE, text=True)
    with open(fifo, "w") as writer:
        writer.write('{"id": "r0", "prompt": "q"}\n')
        writer.flush()
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted before sending" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.fifo"]
