"""Fail fast: a wrong model, a rejected key or a server that refuses everything stops the run."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from vbatch.engine.breaker import CircuitBreaker

from .conftest import SimulatorProcess, read_jsonl, vbatch_cmd, write_jsonl


def failed(i: int, status: int = 404, attempts: int = 1) -> dict[str, Any]:
    return {"id": f"r{i}", "index": i, "status": "failed", "attempts": attempts,
            "error": {"type": "http_error", "message": "no such model", "status_code": status}}


def ok(i: int) -> dict[str, Any]:
    return {"id": f"r{i}", "index": i, "status": "ok", "attempts": 1, "error": None}


def test_breaker_trips_on_a_run_of_one_cause_and_holds_those_records() -> None:
    breaker = CircuitBreaker(trip_after=3)
    assert breaker.admit(failed(0)) == [] and breaker.admit(failed(1)) == []
    assert breaker.admit(failed(2)) == [] and breaker.tripped
    assert "HTTP 404" in (breaker.cause or "")
    assert breaker.release() == [] and breaker.admit(failed(3)) == []


def test_breaker_lets_everything_through_after_one_success() -> None:
    breaker = CircuitBreaker(trip_after=3)
    assert breaker.admit(failed(0)) == []
    assert [r["id"] for r in breaker.admit(ok(1))] == ["r0", "r1"]
    for i in range(2, 10):
        assert breaker.admit(failed(i)) == [failed(i)]
    assert not breaker.tripped


def test_breaker_ignores_row_failures_and_releases_what_it_held_when_not_tripped() -> None:
    breaker = CircuitBreaker(trip_after=2)
    unsent = {**failed(0), "attempts": 0}
    overflow = {**failed(1), "error": {"type": "context_overflow", "message": "too long",
                                       "status_code": 400}}
    assert breaker.admit(unsent) == [unsent] and breaker.admit(overflow) == [overflow]
    assert not breaker.tripped

    short = CircuitBreaker(trip_after=5)
    assert short.admit(failed(0)) == [] and short.release() == [failed(0)]


def run_against(simulator: SimulatorProcess, tmp_path: Path, *extra: str
                ) -> subprocess.CompletedProcess[str]:
    source = write_jsonl(tmp_path / "in.jsonl",
                         [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(200)])
    return subprocess.run(
        vbatch_cmd("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--base-url",
                   simulator.url, "--max-tokens", "2", "--retry-delay", "0.01", *extra),
        capture_output=True, text=True, timeout=120)


def test_unknown_model_is_refused_before_sending(simulator: SimulatorProcess,
                                                 tmp_path: Path) -> None:
    done = run_against(simulator, tmp_path, "--model", "no-such-model")
    assert done.returncode == 2 and "does not serve the model 'no-such-model'" in done.stderr
    assert simulator.stats()["requests_seen"] == 0


def test_rejected_key_is_refused_before_sending(simulator: SimulatorProcess,
                                               tmp_path: Path) -> None:
    simulator.configure(api_key="right")
    done = run_against(simulator, tmp_path, "--api-key", "wrong")
    assert done.returncode == 2 and "refused the API key (HTTP 401)" in done.stderr
    assert simulator.stats()["requests_seen"] == 0


def test_a_server_refusing_every_row_stops_the_run_and_a_rerun_resumes(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    simulator.configure(fail_first=10_000, fail_status=403)
    done = run_against(simulator, tmp_path, "--concurrency", "4")
    assert done.returncode == 3, done.stderr
    assert "requests all failed and none succeeded" in done.stderr and "HTTP 403" in done.stderr
    assert simulator.stats()["requests_seen"] < 30
    out = tmp_path / "out.jsonl"
    assert not out.exists() or read_jsonl(out) == []
    simulator.configure(fail_first=0)
    simulator.reset()
    again = run_against(simulator, tmp_path, "--concurrency", "4")
    assert again.returncode == 0, again.stderr
    assert sorted(r["index"] for r in read_jsonl(out)) == list(range(200))


def test_a_server_gone_for_max_downtime_stops_the_run_and_a_rerun_resumes(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    simulator.configure(latency=0.01)
    source = write_jsonl(tmp_path / "in.jsonl",
                         [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(3000)])
    out = tmp_path / "out.jsonl"
    args = vbatch_cmd("run", str(source), "-o", str(out), "--base-url", simulator.url,
                      "--max-tokens", "2", "--concurrency", "8", "--retry-delay", "0.05",
                      "--max-downtime", "1.5")
    process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while simulator.stats()["requests_seen"] < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    simulator.configure(drop_rate=1.0)
    gone = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    assert "no server answered for 1.5 s" in stderr
    assert time.monotonic() - gone < 15
    kept = read_jsonl(out)
    assert 0 < len(kept) < 3000 and {r["status"] for r in kept} == {"ok"}
    simulator.configure(drop_rate=0.0)
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert Counter(r["index"] for r in read_jsonl(out)) == Counter(range(3000))


def test_breaker_trips_on_a_server_that_breaks_after_succeeding() -> None:
    breaker = CircuitBreaker(trip_after=3, broken_after=4)
    assert breaker.admit(ok(0)) == [ok(0)]
    assert breaker.admit(failed(1, status=500, attempts=3)) == []
    assert [r["id"] for r in breaker.admit(ok(2))] == ["r1", "r2"]
    assert breaker.admit(failed(3)) == [failed(3)]
    for i in range(4, 8):
        assert breaker.admit(failed(i, status=503, attempts=3)) == []
    assert breaker.tripped and "HTTP 503" in (breaker.cause or "")
    assert "the server broke during the run" in (breaker.reason or "")
    assert breaker.release() == [] and breaker.admit(ok(9)) == []


def test_a_server_that_starts_failing_everything_stops_the_run_and_a_rerun_resumes(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    simulator.configure(latency=0.01)
    source = write_jsonl(tmp_path / "in.jsonl",
                         [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(3000)])
    out = tmp_path / "out.jsonl"
    args = vbatch_cmd("run", str(source), "-o", str(out), "--base-url", simulator.url,
                      "--max-tokens", "2", "--concurrency", "8", "--retry-delay", "0.01",
                      "--max-retries", "2")
    process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while simulator.stats()["requests_seen"] < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    simulator.configure(error_rate=1.0, fail_status=500)
    broke = simulator.stats()["requests_seen"]
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    assert "the server broke during the run" in stderr and "HTTP 500" in stderr
    # Some dozens of rows, each tried three times, then it stopped: not the rest of the input.
    assert simulator.stats()["requests_seen"] - broke < 400
    kept = read_jsonl(out)
    assert 0 < len(kept) < 3000
    assert max(Counter(r["id"] for r in kept).values()) == 1
    simulator.configure(error_rate=0.0)
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert Counter(r["index"] for r in read_jsonl(out)) == Counter(range(3000))
    assert {r["status"] for r in read_jsonl(out)} == {"ok"}
