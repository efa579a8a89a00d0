"""Edges found by a fault run: options and rows that used to give a traceback, a hang or a
silent surprise each give one clear line before anything is sent, or are taken as a user
means them; secrets stay out of messages; a manifest keeps its permissions."""

from __future__ import annotations

import base64
import decimal
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vbatch import ConfigError, RunConfig, run
from vbatch.urls import normalize_base_url, redact_url

from .conftest import SimulatorProcess, read_jsonl, vbatch_cmd, write_jsonl

BOM = b"\xef\xbb\xbf"


def rows(count: int) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(count)]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(vbatch_cmd(*args), capture_output=True, text=True, timeout=timeout)


def one_clear_line(done: subprocess.CompletedProcess[str], simulator: SimulatorProcess,
                   says: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and says in done.stderr, done.stderr
    assert simulator.stats()["requests_seen"] == 0


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--max-tokens", "100000000000000000000", "at most 9223372036854775807"),
    ("--request-timeout", "inf", "finite"),
    ("--temperature", "inf", "finite"),
    ("--temperature", "nan", "finite"),
    ("--concurrency", "100000000", "at most 16384"),
    ("--max-concurrency", "100000000", "at most 16384"),
    ("--max-model-len", "1", "--max-model-len is an option of the vLLM server vbatch starts"),
    ("--startup-timeout", "5", "--startup-timeout is an option of the vLLM server"),
])
def test_an_out_of_range_option_is_one_line_before_sending(
        simulator: SimulatorProcess, tmp_path: Path, option: str, value: str, says: str) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(3))
    started = time.monotonic()
    done = cli("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--base-url",
               simulator.url, option, value)
    one_clear_line(done, simulator, says)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out.jsonl").exists()


def test_a_seed_or_limit_beyond_64_bits_is_refused_in_python(tmp_path: Path) -> None:
    for option in ({"seed": 1e23}, {"max_tokens": 10**20}, {"seed": 2**64}):
        with pytest.raises(ConfigError, match="at most"):
            RunConfig(input=tmp_path / "in.jsonl", output=tmp_path / "o.jsonl", **option)
    assert RunConfig(input=tmp_path / "in.jsonl", output=tmp_path / "o.jsonl",
                     seed=2**63 - 1).seed == 2**63 - 1


def test_a_byte_order_mark_is_dropped_from_jsonl_and_batch_files(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(BOM + b"".join(json.dumps(r).encode() + b"\n" for r in rows(3)))
    done = cli("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--base-url",
               simulator.url)
    assert done.returncode == 0, done.stderr
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "out.jsonl")) == ["r0", "r1", "r2"]
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}}
    batch = tmp_path / "batch.jsonl"
    batch.write_bytes(BOM + json.dumps(line).encode() + b"\n")
    done = cli("run-batch", "-i", str(batch), "-o", str(tmp_path / "batch-out.jsonl"),
               "--base-url", simulator.url)
    assert done.returncode == 0, done.stderr
    assert [r["custom_id"] for r in read_jsonl(tmp_path / "batch-out.jsonl")] == ["a"]


def test_an_id_beyond_64_bits_says_so(simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1180591620717411303424, "prompt": "hi"}\n')
    done = cli("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--base-url",
               simulator.url)
    one_clear_line(done, simulator, "beyond 64 bits")
    assert "got float" not in done.stderr


@pytest.mark.parametrize("limit", [-5, 0, 2**40, "12", 1.5])
def test_a_batch_line_with_a_bad_limit_is_a_file_problem(
        simulator: SimulatorProcess, tmp_path: Path, limit: object) -> None:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "sim-model", "max_tokens": limit,
                     "messages": [{"role": "user", "content": "hi"}]}}
    batch = write_jsonl(tmp_path / "batch.jsonl", [line])
    done = cli("run-batch", "-i", str(batch), "-o", str(tmp_path / "out.jsonl"),
               "--base-url", simulator.url)
    one_clear_line(done, simulator, "line 1: invalid_value: body.max_tokens")


def test_kept_parquet_values_json_cannot_hold_are_converted(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({
        "prompt": ["a", "b"],
        "price": pa.array([decimal.Decimal("1.10"), decimal.Decimal("-3.005")],
                          pa.decimal128(10, 3)),
        "blob": [b"\x00\xff", b"xy"],
        "day": pa.array([19000, 19001], pa.date32()),
    }), source)
    out = tmp_path / "out.jsonl"
    done = cli("run", str(source), "-o", str(out), "--base-url", simulator.url, "--keep",
               "price", "--keep", "blob", "--keep", "day", "--ordered")
    assert done.returncode == 0, done.stderr
    records = read_jsonl(out)
    assert [r["price"] for r in records] == ["1.100", "-3.005"]
    assert [base64.b64decode(r["blob"]) for r in records] == [b"\x00\xff", b"xy"]
    assert [r["day"] for r in records] == ["2022-01-08", "2022-01-09"]
    assert {r["status"] for r in records} == {"ok"}


def test_an_output_that_is_a_pipe_or_a_device_is_refused_at_once(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(2))
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    for target in (str(fifo), os.devnull):
        done = cli("run", str(source), "-o", target, "--base-url", simulator.url, timeout=30)
        one_clear_line(done, simulator, "is not a regular file")


def test_an_invalid_url_never_shows_its_password() -> None:
    for url in ("http//bob:PASSWD456@host:8000/v1", "http://bob:pa@ss456@host/v1",
                "ftp://bob:PASSWD456@host", "http://TOKEN456@host:8000/v1"):
        shown = redact_url(url)
        assert "PASSWD456" not in shown and "ss456" not in shown and "TOKEN456" not in shown
    with pytest.raises(ConfigError) as refused:
        normalize_base_url("http//bob:PASSWD456@host:8000/v1")
    assert "PASSWD456" not in str(refused.value)
    assert redact_url("http://bob:hunter2@host/v1") == "http://bob:***@host/v1"


def test_a_manifest_keeps_the_permissions_its_owner_gave(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(3))
    out = tmp_path / "out.jsonl"
    config = RunConfig(input=source, output=out, base_url=simulator.url, quiet=True)
    assert run(config).exit_code == 0
    manifest = tmp_path / "out.jsonl.manifest.json"
    manifest.chmod(0o600)
    write_jsonl(source, rows(5))
    assert run(config).exit_code == 0
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o600
    assert len(read_jsonl(out)) == 5


def test_call_directories_a_killed_process_left_are_removed(
        simulator: SimulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    import vbatch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    simulator.configure(latency=0.05)
    script = (
        "import vbatch, sys\n"
        f"vbatch.generate([f'p{{i}}' for i in range(5000)], base_url={simulator.url!r},"
        " max_tokens=2, concurrency=2, progress=False)\n")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 60
    while simulator.stats()["requests_seen"] < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    left = list(tmp_path.glob(f"vbatch-{process.pid}-*"))
    assert left and (left[0] / "input.jsonl").exists()
    mine = tmp_path / f"vbatch-{os.getpid()}-running"
    mine.mkdir()
    simulator.configure(latency=0.0)
    out = vbatch.generate(["hi"], base_url=simulator.url, max_tokens=2, progress=False)
    assert out[0]["status"] == "ok"
    assert not any(path.exists() for path in left)
    assert mine.exists()
