"""The worker pool: the concurrency bound, retries, and failures that stay rows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from vbatch import RunConfig, run
from vbatch.endpoints import ENDPOINTS
from vbatch.engine.backoff import backoff_delay
from vbatch.engine.dispatch import Dispatcher
from vbatch.engine.items import WorkItem
from vbatch.errors import HTTPStatusError
from vbatch.settings import SendPolicy

from .conftest import InProcessServer, SimulatorProcess, read_jsonl, write_jsonl


def make_input(tmp_path: Path, count: int, prompt: str = "tell me something") -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"{prompt} {i}"} for i in range(count)])


def config(tmp_path: Path, source: Path, url: str, **options: Any) -> RunConfig:
    options.setdefault("retry_base_delay", 0.01)
    return RunConfig(input=source, output=tmp_path / "out.jsonl", base_url=url, quiet=True,
                     max_tokens=4, **options)


def test_in_flight_reaches_the_bound_and_never_exceeds_it(
    fake_server: InProcessServer, tmp_path: Path
) -> None:
    fake_server.configure(latency=0.2)
    source = make_input(tmp_path, 300)
    result = fake_server.run(config(tmp_path, source, fake_server.url, concurrency=40))
    assert result.exit_code == 0
    assert fake_server.stats()["peak_in_flight"] == 40
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 300


def test_burst_of_503_is_retried(fake_server: InProcessServer, tmp_path: Path) -> None:
    fake_server.configure(fail_first=30, fail_status=503)
    source = make_input(tmp_path, 20)
    result = fake_server.run(config(tmp_path, source, fake_server.url, concurrency=5))
    records = read_jsonl(tmp_path / "out.jsonl")
    assert result.exit_code == 0
    assert {r["status"] for r in records} == {"ok"}
    assert sum(r["attempts"] for r in records) == 50


def test_429_honours_retry_after(fake_server: InProcessServer, tmp_path: Path) -> None:
    fake_server.configure(fail_first=1, fail_status=429, retry_after=0.5)
    source = make_input(tmp_path, 1)
    fake_server.run(config(tmp_path, source, fake_server.url))
    record = read_jsonl(tmp_path / "out.jsonl")[0]
    assert record["status"] == "ok" and record["attempts"] == 2
    assert record["latency_s"] >= 0.49  # the event loop wakes within its timer resolution


def test_dropped_connections_are_retried(fake_server: InProcessServer, tmp_path: Path) -> None:
    fake_server.configure(drop_rate=0.3, seed=7)
    source = make_input(tmp_path, 60)
    result = fake_server.run(config(tmp_path, source, fake_server.url, concurrency=8,
                                    max_retries=10))
    records = read_jsonl(tmp_path / "out.jsonl")
    assert result.exit_code == 0
    assert len(records) == 60
    assert fake_server.stats()["dropped"] > 0
    assert max(r["attempts"] for r in records) > 1


def test_slow_answers_time_out_and_are_retried(simulator: SimulatorProcess, tmp_path: Path
                                                ) -> None:
    simulator.configure(slow_rate=1.0, slow_latency=2.0)
    source = make_input(tmp_path, 2)
    result = run(config(tmp_path, source, simulator.url, request_timeout=0.3, max_retries=1))
    records = read_jsonl(tmp_path / "out.jsonl")
    assert result.exit_code == 1
    assert {r["error"]["type"] for r in records} == {"timeout"}
    assert {r["attempts"] for r in records} == {2}


def test_400_fails_the_row_at_once_and_the_rest_complete(
    fake_server: InProcessServer, tmp_path: Path
) -> None:
    rows = [{"id": f"r{i}", "prompt": "SIM_REJECT me" if i % 5 == 0 else f"fine {i}"}
            for i in range(20)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    result = fake_server.run(config(tmp_path, source, fake_server.url))
    records = {r["id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert result.exit_code == 1
    assert result.stats.failed == 4 and result.stats.ok == 16
    rejected = records["r5"]
    assert rejected["status"] == "failed" and rejected["attempts"] == 1
    assert rejected["error"]["status_code"] == 400
    assert rejected["error"]["type"] == "http_error"
    assert "simulated rejection" in rejected["error"]["message"]
    assert records["r1"]["error"] is None


def test_retries_give_up_after_max_retries(fake_server: InProcessServer, tmp_path: Path) -> None:
    fake_server.configure(error_rate=1.0, fail_status=500)
    source = make_input(tmp_path, 3)
    result = fake_server.run(config(tmp_path, source, fake_server.url, max_retries=2))
    records = read_jsonl(tmp_path / "out.jsonl")
    assert result.exit_code == 1
    assert [r["attempts"] for r in records] == [3, 3, 3]
    assert "simulated overload" in records[0]["error"]["message"]
    assert result.stats.failures["http_error (HTTP 500)"].count == 3


def test_unreachable_server_fails_rows_not_the_run(tmp_path: Path) -> None:
    source = make_input(tmp_path, 3)
    result = run(config(tmp_path, source, "http://127.0.0.1:9/v1", model="m", max_retries=1))
    records = read_jsonl(tmp_path / "out.jsonl")
    assert result.exit_code == 1
    assert {r["error"]["type"] for r in records} == {"connection_error"}


def test_backoff_grows_and_respects_retry_after() -> None:
    delays = [backoff_delay(attempt, 1.0, None) for attempt in (1, 2, 3, 4)]
    for attempt, delay in enumerate(delays, start=1):
        assert 2 ** (attempt - 1) * 0.5 <= delay <= 2 ** (attempt - 1)
    assert backoff_delay(1, 0.01, 3.0) == 3.0
    assert backoff_delay(30, 1.0, None) <= 60


class FakeServer:
    """An in-process poster: records concurrency, fails the rows it is told to."""

    def __init__(self, latency: float = 0.01):
        self.latency = latency
        self.in_flight = 0
        self.peak = 0

    async def post_json(self, path: str, body: bytes) -> dict[str, Any]:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
        finally:
            self.in_flight -= 1
        if b"bad" in body:
            raise HTTPStatusError(400, "no")
        return {"choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1}}


@pytest.mark.parametrize("concurrency", [1, 7, 64])
def test_dispatcher_bound_in_process(concurrency: int) -> None:
    server = FakeServer()
    records: list[dict[str, Any]] = []
    items = (WorkItem(str(i), i, b"bad" if i == 3 else b"{}") for i in range(200))

    async def main() -> None:
        dispatcher = Dispatcher(server, "/chat/completions", records.append, ENDPOINTS["chat"],
                                SendPolicy(concurrency=concurrency))
        await dispatcher.run(items)
        assert dispatcher.workers == concurrency

    asyncio.run(main())
    assert server.peak == concurrency
    assert sorted(int(r["id"]) for r in records) == list(range(200))
    assert [r["status"] for r in records if r["id"] == "3"] == ["failed"]


def test_stop_abandons_in_flight_after_grace() -> None:
    server = FakeServer(latency=30)
    records: list[dict[str, Any]] = []

    async def main() -> Dispatcher:
        dispatcher = Dispatcher(server, "/x", records.append, ENDPOINTS["chat"],
                                SendPolicy(concurrency=4, shutdown_grace=0.2))
        asyncio.get_running_loop().call_later(0.1, dispatcher.stop)
        await asyncio.wait_for(dispatcher.run(WorkItem(str(i), i, b"{}") for i in range(100)), 5)
        return dispatcher

    dispatcher = asyncio.run(main())
    assert dispatcher.interrupted
    assert records == []


def test_workers_are_made_as_the_work_needs_them() -> None:
    server = FakeServer()
    records: list[dict[str, Any]] = []

    async def main() -> Dispatcher:
        dispatcher = Dispatcher(server, "/x", records.append, ENDPOINTS["chat"],
                                SendPolicy(concurrency=16_384))
        await dispatcher.run(WorkItem(str(i), i, b"{}") for i in range(5))
        return dispatcher

    dispatcher = asyncio.run(main())
    assert sorted(int(r["id"]) for r in records) == list(range(5))
    assert dispatcher.workers == server.peak == 5


def test_a_worker_that_fails_ends_the_run_with_its_error_not_a_hang() -> None:
    server = FakeServer(latency=0.001)

    def sink(record: dict[str, Any]) -> None:
        raise RuntimeError(f"cannot take {record['id']}")

    async def main() -> None:
        dispatcher = Dispatcher(server, "/x", sink, ENDPOINTS["chat"],
                                SendPolicy(concurrency=2))
        # Both workers die on their first record; the feeder then waits for room in a
        # queue of 4 that nobody empties, unless the run ends with the workers' error.
        await asyncio.wait_for(dispatcher.run(WorkItem(str(i), i, b"{}") for i in range(100)),
                               5)

    with pytest.raises(RuntimeError, match="cannot take"):
        asyncio.run(main())
