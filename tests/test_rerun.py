"""``--rerun-if``: a rerun sends again the rows whose record matches, with this run's options,
and keeps every other record as it was."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from vbatch import ConfigError, ManifestMismatchError, RunConfig
from vbatch.output.select import record_test

from .conftest import InProcessServer, read_jsonl, run_cli, vbatch_cmd, write_jsonl


def rows(tmp_path: Path, count: int) -> Path:
    return write_jsonl(tmp_path / "in.jsonl",
                       [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(count)])


def by_id(path: Path) -> dict[str, bytes]:
    import orjson

    return {orjson.loads(line)["id"]: line for line in path.read_bytes().splitlines()}


def test_the_expression_language() -> None:
    record = {"status": "failed", "finish_reason": "length", "usage": {"completion_tokens": 3},
              "error": {"type": "http_error", "status_code": 503}}
    holds = {
        'finish_reason == "length"': True,
        'status == "failed" and error.type != "bad_input"': True,
        "usage.completion_tokens < 5": True,
        "usage.completion_tokens >= 5 or error.status_code in [500, 503]": True,
        "not (status == 'ok')": True,
        "parsed.age > 3": False,
        "error.reason == null": True,
        "missing < 3": False,
        "-1 < usage.completion_tokens": True,
    }
    for expression, expected in holds.items():
        assert record_test(expression)(record) is expected, expression
    for bad, words in (("status ==", "is not an expression"),
                       ("open('x')", "is not allowed"), ("a + 1", "is not allowed"),
                       ("status is None", "comparison Is is not allowed")):
        with pytest.raises(ConfigError, match=words):
            record_test(bad)


def test_rerun_sends_exactly_the_matching_rows_and_keeps_the_rest(
        fake_server: InProcessServer, tmp_path: Path) -> None:
    source, out = rows(tmp_path, 200), tmp_path / "out.jsonl"
    first = RunConfig(input=source, output=out, base_url=fake_server.url, quiet=True,
                      max_tokens=8, stop=("w1",), temperature=0)
    fake_server.run(first)
    before = by_id(out)
    cut = {i for i, line in before.items() if b'"finish_reason":"length"' in line}
    assert 0 < len(cut) < 200
    with pytest.raises(ManifestMismatchError):
        fake_server.run(first.replace(max_tokens=32))
    fake_server.reset()
    result = fake_server.run(first.replace(max_tokens=32,
                                           rerun_if='finish_reason == "length"'))
    sent = [r for r in fake_server.requests() if r.get("max_tokens") == 32]
    assert len(sent) == len(cut) == fake_server.stats()["requests_seen"]
    after = by_id(out)
    assert set(after) == set(before)
    assert all(after[i] == before[i] for i in before if i not in cut)
    assert all(after[i] != before[i] for i in cut)
    assert result.stats.rerun == len(cut)
    assert f"rerun: {len(cut)} rows matched --rerun-if" in result.stats.summary_text()


def test_a_python_predicate(fake_server: InProcessServer, tmp_path: Path) -> None:
    source, out = rows(tmp_path, 20), tmp_path / "out.jsonl"
    config = RunConfig(input=source, output=out, base_url=fake_server.url, quiet=True,
                       max_tokens=4)
    fake_server.run(config)
    fake_server.reset()

    def even(record: dict[str, Any]) -> bool:
        return int(record["id"][1:]) % 2 == 0

    fake_server.run(config.replace(rerun_if=even))
    assert fake_server.stats()["requests_seen"] == 10


@pytest.mark.timeout(180)
def test_kill_9_during_a_rerun_then_again_gives_one_record_per_row(simulator: Any,
                                                                   tmp_path: Path) -> None:
    source, out = rows(tmp_path, 400), tmp_path / "out.jsonl"
    base = ["run", str(source), "-o", str(out), "--base-url", simulator.url, "--quiet",
            "--temperature", "0", "--stop", "w1"]
    done = run_cli(*base, "--max-tokens", "8")
    assert done.returncode == 0, done.stderr
    cut = {i for i, line in by_id(out).items() if b'"length"' in line}
    simulator.configure(latency=0.05)
    rerun = [*base, "--max-tokens", "32", "--rerun-if", 'finish_reason == "length"',
             "--concurrency", "8"]
    process = subprocess.Popen(vbatch_cmd(*rerun))
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    simulator.configure(latency=0.0)
    again = run_cli(*rerun)
    assert again.returncode == 0, again.stderr
    records = read_jsonl(out)
    assert max(Counter(r["id"] for r in records).values()) == 1 and len(records) == 400
    assert sum(r["finish_reason"] == "length" for r in records) < len(cut)
