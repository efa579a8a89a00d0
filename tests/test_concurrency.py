"""Adaptive concurrency: metrics parsing, the control rule, the adjustable bound."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from vbatch import RunConfig
from vbatch.engine.concurrency import AdaptiveController, ConcurrencyLimit
from vbatch.transport.metrics import ServerLoad, parse_metrics

from .conftest import InProcessServer, read_jsonl, write_jsonl

VLLM_METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 30.0
vllm:num_requests_running{engine="1",model_name="m"} 12.0
vllm:num_requests_waiting{engine="0",model_name="m"} 5.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.42
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.61
vllm:num_preemptions_total{engine="0",model_name="m"} 3.0
vllm:prompt_tokens_total{engine="0",model_name="m"} 1000.0
vllm:prompt_tokens_total{engine="1",model_name="m"} 500.0
vllm:generation_tokens_total{engine="0",model_name="m"} 77.0
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 400.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 100.0
"""


def test_parse_metrics_sums_engines() -> None:
    assert parse_metrics(VLLM_METRICS) == ServerLoad(42.0, 5.0, 0.61, 3.0, 1500.0, 77.0, 400.0,
                                                     100.0)
    two = ServerLoad.summed([ServerLoad(1, 2, 0.5, None, 10, 20), ServerLoad(3, 0, 0.7, 1, 5)])
    assert two == ServerLoad(4, 2, 0.7, 1, 15, 20, None, None)


def test_parse_metrics_old_names_and_absence() -> None:
    old = ('vllm:num_requests_running{model_name="m"} 8\n'
           'vllm:num_requests_waiting{model_name="m"} 0\n'
           'vllm:gpu_cache_usage_perc{model_name="m"} 0.99\n')
    assert parse_metrics(old) == ServerLoad(8.0, 0.0, 0.99, None)
    assert parse_metrics("process_cpu_seconds_total 3.2\n") is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def controller(start: int, maximum: int = 1024) -> tuple[AdaptiveController, ConcurrencyLimit,
                                                          Clock]:
    clock = Clock()
    bound = ConcurrencyLimit(start)
    return AdaptiveController(bound, maximum=maximum, clock=clock), bound, clock


def test_slow_start_while_the_server_has_room() -> None:
    ctl, bound, clock = controller(64)
    bound.in_flight = 64
    assert ctl.update(ServerLoad(64, 0, 0.2, 0)) == 96
    bound.in_flight = 30
    clock.now += 1
    assert ctl.update(ServerLoad(30, 0, 0.2, 0)) == 96


def test_no_growth_until_the_server_has_taken_in_the_requests() -> None:
    ctl, bound, _ = controller(96)
    bound.in_flight = 96
    assert ctl.update(ServerLoad(10, 0, 0.1, 0)) == 96
    assert ctl.update(ServerLoad(90, 0, 0.1, 0)) == 144


def test_queue_target_once_requests_wait() -> None:
    ctl, _, clock = controller(400)
    assert ctl.update(ServerLoad(256, 144, 0.5, 0)) == 256 + 26
    for second in range(1, 5):
        clock.now += 1
        ctl.update(ServerLoad(20, 3, 0.5, 0, generation_tokens=float(second)))
    assert ctl.bound.limit == 24


def test_a_dip_in_running_does_not_shrink_the_bound_a_lasting_drop_does() -> None:
    ctl, _, clock = controller(110)
    assert ctl.update(ServerLoad(100, 12, 1.0, 0)) == 110
    clock.now += 1
    assert ctl.update(ServerLoad(90, 2, 0.9, 0)) == 110
    for _ in range(4):
        clock.now += 1
        ctl.update(ServerLoad(60, 5, 0.9, 0))
    assert ctl.bound.limit == 66


def test_back_off_on_preemptions_then_hold() -> None:
    ctl, bound, clock = controller(300)
    ctl.update(ServerLoad(200, 10, 0.8, 5))
    assert ctl.update(ServerLoad(200, 10, 0.8, 9)) == 180
    clock.now += 2
    bound.in_flight = 180
    assert ctl.update(ServerLoad(180, 0, 0.8, 9)) == 180
    clock.now += 4
    assert ctl.update(ServerLoad(180, 0, 0.8, 9)) == 270


def test_full_kv_cache_stops_growth() -> None:
    ctl, bound, _ = controller(200)
    bound.in_flight = 200
    assert ctl.update(ServerLoad(150, 0, 0.99, 0)) == 165


def test_bound_respects_the_ceiling() -> None:
    ctl, bound, _ = controller(100, maximum=120)
    bound.in_flight = 100
    assert ctl.update(ServerLoad(100, 0, 0.1, 0)) == 120


def test_limit_can_shrink_and_grow_while_waiting() -> None:
    async def main() -> list[int]:
        bound = ConcurrencyLimit(2)
        peaks: list[int] = []

        async def job() -> None:
            await bound.acquire()
            peaks.append(bound.in_flight)
            await asyncio.sleep(0.01)
            bound.release()

        tasks = [asyncio.create_task(job()) for _ in range(40)]
        await asyncio.sleep(0.015)
        bound.set(5)
        await asyncio.sleep(0.015)
        bound.set(1)
        await asyncio.gather(*tasks)
        return peaks

    peaks = asyncio.run(main())
    assert len(peaks) == 40 and max(peaks) == 5 and peaks[-1] == 1


def rows(tmp_path: Path, count: int) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p {i}"} for i in range(count)])


def test_converges_near_capacity_not_at_the_ceiling(
    fake_server: InProcessServer, tmp_path: Path
) -> None:
    fake_server.configure(capacity=100, latency=0.3)
    stats = tmp_path / "stats.json"
    result = fake_server.run(RunConfig(input=rows(tmp_path, 2500), output=tmp_path / "out.jsonl",
                           base_url=fake_server.url, quiet=True, stats_json=stats))
    assert result.exit_code == 0
    trace = json.loads(stats.read_text())["concurrency_trace"]
    settled = trace[3:-2]
    assert settled and all(100 <= s["limit"] <= 115 for s in settled), settled
    assert all(s["in_flight"] <= 115 for s in settled)
    elapsed = json.loads(stats.read_text())["wall_time_s"]
    assert 2500 / elapsed >= 0.8 * 100 / 0.3


def test_without_metrics_the_bound_is_fixed(fake_server: InProcessServer, tmp_path: Path) -> None:
    fake_server.configure(metrics=False, latency=1.0)
    result = fake_server.run(RunConfig(input=rows(tmp_path, 600), output=tmp_path / "out.jsonl",
                           base_url=fake_server.url, quiet=True, max_concurrency=200))
    assert result.exit_code == 0
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 600
    assert fake_server.stats()["peak_in_flight"] == 200


def test_a_slow_engine_s_wave_of_finished_sequences_does_not_shrink_the_bound() -> None:
    ctl, bound, clock = controller(141)
    bound.in_flight = 141
    generated = 0.0
    # The engine reports once a step, every 5 s; the controller samples every second.
    for _ in range(4):
        generated += 640
        for _ in range(5):
            clock.now += 1
            ctl.update(ServerLoad(128, 40, 0.5, 0, 9000, generated))
    assert ctl.bound.limit == 141
    generated += 640
    for _ in range(5):
        clock.now += 1
        ctl.update(ServerLoad(80, 30, 0.5, 0, 9000, generated))
    assert ctl.bound.limit == 141, "a wave that finished 48 sequences at once is not capacity"
    for step in range(3):
        generated += 400
        for _ in range(5):
            clock.now += 1
            ctl.update(ServerLoad(80, 30, 0.5, 0, 9000 + step, generated))
    assert ctl.bound.limit == 88, "a server that runs fewer for three reports does"
