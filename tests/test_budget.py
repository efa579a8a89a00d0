"""Budgets: ``--time-limit``, ``--token-budget``, ``--max-requests`` stop a run gracefully with
exit 5, every finished record kept, and the rerun carries on."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import vbatch
from vbatch import ConfigError, RunConfig
from vbatch.budget import parse_duration, parse_token_budget

from .conftest import InProcessServer, read_jsonl, run_cli, write_jsonl


def rows(tmp_path: Path, count: int) -> Path:
    return write_jsonl(tmp_path / "in.jsonl",
                       [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(count)])


def test_durations_and_token_counts_parse() -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    assert parse_duration(2.5) == 2.5 and parse_duration("15m") == 900
    assert parse_token_budget("2M") == (2_000_000, False)
    assert parse_token_budget("500k+prompt") == (500_000, True)
    for bad in ("soon", "-3s", "0"):
        with pytest.raises(ConfigError, match="--time-limit"):
            parse_duration(bad)
    with pytest.raises(ConfigError, match="--token-budget 'lots' is not a count"):
        RunConfig(input="a.jsonl", output="b.jsonl", token_budget="lots")


@pytest.mark.timeout(120)
def test_a_time_limit_ends_the_run_in_time_and_the_rerun_completes(simulator: Any,
                                                                   tmp_path: Path) -> None:
    simulator.configure(latency=0.4, capacity=4)
    source, out = rows(tmp_path, 200), tmp_path / "out.jsonl"
    args = ["run", str(source), "-o", str(out), "--base-url", simulator.url,
            "--concurrency", "4", "--max-tokens", "8", "--shutdown-grace", "2"]
    started = time.monotonic()
    done = run_cli(*args, "--time-limit", "5s")
    took = time.monotonic() - started
    assert done.returncode == 5, done.stderr
    assert took < 5 + 2 + 1.5, took
    assert "budget reached (--time-limit 5 s)" in done.stderr
    assert "rerun to continue" in done.stderr and "rows left need about" in done.stderr
    kept = read_jsonl(out)
    assert 10 < len(kept) < 200 and {r["status"] for r in kept} == {"ok"}
    simulator.configure(latency=0.0, capacity=0)
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    records = read_jsonl(out)
    assert len(records) == 200 and max(Counter(r["id"] for r in records).values()) == 1


def test_a_token_budget_stops_within_one_batch_of_requests(fake_server: InProcessServer,
                                                           tmp_path: Path) -> None:
    fake_server.configure(latency=0.005)
    result = fake_server.run(RunConfig(input=rows(tmp_path, 500), output=tmp_path / "o.jsonl",
                                       base_url=fake_server.url, quiet=True, max_tokens=16,
                                       concurrency=8, token_budget=800))
    assert result.exit_code == 5 and result.budget is not None
    generated = result.stats.completion_tokens
    assert 800 <= generated <= 800 + 2 * 8 * 16, generated


def test_max_requests_counts_every_request(fake_server: InProcessServer,
                                           tmp_path: Path) -> None:
    result = fake_server.run(RunConfig(input=rows(tmp_path, 300), output=tmp_path / "o.jsonl",
                                       base_url=fake_server.url, quiet=True, max_tokens=4,
                                       concurrency=4, max_requests=50))
    assert result.exit_code == 5
    assert 50 <= fake_server.stats()["requests_seen"] <= 50 + 4
    assert len(read_jsonl(tmp_path / "o.jsonl")) == fake_server.stats()["requests_seen"]


def test_python_raises_budget_reached(fake_server: InProcessServer) -> None:
    fake_server.configure(latency=0.01)
    with pytest.raises(vbatch.BudgetReachedError, match="budget reached") as caught:
        vbatch.generate([f"q {i}" for i in range(400)], base_url=fake_server.url,
                        transport=fake_server.transport, max_requests=20, concurrency=2,
                        progress=False)
    assert caught.value.exit_code == vbatch.EXIT_BUDGET == 5
