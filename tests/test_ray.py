"""``--ray``: a local Ray cluster, two actors, the simulator (and the real server, marked)."""

from __future__ import annotations

import io
import itertools
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vbatch import RunConfig, run

from .conftest import SimulatorProcess, read_jsonl, run_cli, vbatch_cmd, write_jsonl

VARYING = ("latency_s", "attempts")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A local two-CPU Ray cluster, reachable by other processes with ``--ray auto``."""
    import ray

    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                       configure_logging=False)
    yield str(context.address_info["gcs_address"])
    ray.shutdown()


def rows(count: int) -> list[dict[str, str]]:
    return [{"id": f"row-{i}", "prompt": f"question {i} " + "word " * (i % 13)}
            for i in range(count)]


def comparable(path: Path) -> list[dict[str, Any]]:
    records = [{k: v for k, v in r.items() if k not in VARYING} for r in read_jsonl(path)]
    return sorted(records, key=lambda r: r["index"])


def shard_workers() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::ShardWorker"):
            found.append(process)
    return found


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def shard_lines(shard_dir: Path) -> int:
    if not shard_dir.is_dir():
        return 0
    return sum(path.read_bytes().count(b"\n") for path in shard_dir.glob("shard-*.jsonl"))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_two_actors_give_the_records_of_a_single_process_run(
    ray_cluster: str, simulator: SimulatorProcess, tmp_path: Path, fmt: str
) -> None:
    data = rows(300)
    if fmt == "jsonl":
        source = write_jsonl(tmp_path / "in.jsonl", data)
    else:
        source = tmp_path / "in.parquet"
        pq.write_table(pa.Table.from_pylist(data), source, row_group_size=25)
    base = dict(input=source, base_url=simulator.url, max_tokens=5, temperature=0.0,
                keep=("prompt",))
    single = tmp_path / "single.jsonl"
    assert run(RunConfig(output=single, quiet=True, **base)).exit_code == 0
    simulator.reset()
    sharded = tmp_path / "ray.jsonl"
    messages = io.StringIO()
    result = run(RunConfig(output=sharded, ray=True, replicas=2, shard_rows=40, **base),
                 stream=messages)
    assert result.exit_code == 0 and result.stats.ok == 300
    assert simulator.stats()["requests_seen"] == 300
    assert comparable(sharded) == comparable(single)
    said = messages.getvalue()
    assert "Ray worker 0 on" in said and "Ray worker 1 on" in said
    assert not (tmp_path / "ray.jsonl.shards").exists()
    again = run(RunConfig(output=sharded, ray=True, replicas=2, shard_rows=40, quiet=True,
                          **base))
    assert again.stats.ok == 0 and again.stats.already_done == 300
    timeline = read_jsonl(tmp_path / "ray.jsonl.timeline.jsonl")
    assert [line["segment"] for line in timeline if "segment" in line] == [1, 2]
    assert max(line.get("rows_done", 0) for line in timeline) == 300


@dataclass
class Background:
    """A run in a thread of its own: what it says and, once it ends, its result."""

    thread: threading.Thread
    messages: io.StringIO
    outcome: dict[str, Any]
    out: Path


def rows_in_background(simulator: SimulatorProcess, tmp_path: Path) -> Background:
    """800 rows over two actors against a slowed simulator, running in a thread."""
    simulator.configure(latency=0.05, capacity=16)
    source = write_jsonl(tmp_path / "in.jsonl", rows(800))
    out = tmp_path / "out.jsonl"
    config = RunConfig(input=source, output=out, base_url=simulator.url, max_tokens=3,
                       ray=True, replicas=2, shard_rows=50, concurrency=8)
    messages = io.StringIO()
    outcome: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: outcome.update(result=run(config, stream=messages)), daemon=True
    )
    runner.start()
    return Background(runner, messages, outcome, out)


def assert_it_ended_with_each_row_once(background: Background, timeout: float) -> None:
    background.thread.join(timeout=timeout)
    assert not background.thread.is_alive()
    assert "a Ray worker died" in background.messages.getvalue()
    records = read_jsonl(background.out)
    assert Counter(r["id"] for r in records) == Counter(r["id"] for r in rows(800))
    assert all(r["status"] == "ok" for r in records)
    assert background.outcome["result"].exit_code == 0


def test_killing_an_actor_mid_run_loses_and_duplicates_nothing(
    ray_cluster: str, simulator: SimulatorProcess, tmp_path: Path
) -> None:
    background = rows_in_background(simulator, tmp_path)
    wait_for(lambda: len(shard_workers()) == 2 and shard_lines(tmp_path / "out.jsonl.shards") > 100)
    shard_workers()[0].send_signal(signal.SIGKILL)
    assert_it_ended_with_each_row_once(background, timeout=120)


def slow_run_args(simulator: SimulatorProcess, tmp_path: Path, ray_address: str,
                  count: int) -> tuple[str, ...]:
    """A ``vbatch run --ray`` of ``count`` rows against a slowed simulator, two workers."""
    simulator.configure(latency=0.05, capacity=16)
    source = write_jsonl(tmp_path / "in.jsonl", rows(count))
    return ("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--base-url", simulator.url,
            "--max-tokens", "3", "--ray", ray_address, "--replicas", "2", "--shard-rows", "50",
            "--concurrency", "8")


def assert_each_row_once(out: Path, count: int) -> None:
    counts = Counter(r["id"] for r in read_jsonl(out))
    assert set(counts) == {r["id"] for r in rows(count)}
    assert max(counts.values()) == 1


def test_a_worker_starts_its_next_shard_before_the_one_before_drains(
        ray_cluster: str, simulator: SimulatorProcess, tmp_path: Path) -> None:
    """Eight shards of 5 rows on one worker, 4 in flight: each next shard starts sending while
    the last row of the one before is in flight, under one bound, so the server has 4 in flight
    nearly throughout (shard by shard: 4, then 1 for as long, a mean of 2.5)."""
    simulator.configure(latency=0.4)
    out = tmp_path / "out.jsonl"
    result = run(RunConfig(input=write_jsonl(tmp_path / "in.jsonl", rows(40)), output=out,
                           base_url=simulator.url, max_tokens=2, concurrency=4, ray=True,
                           replicas=1, shard_rows=5, quiet=True))
    assert result.exit_code == 0
    assert_each_row_once(out, 40)
    stats = simulator.stats()
    assert stats["peak_in_flight"] == 4
    mean_in_flight = stats["in_flight_s"] / (stats["last_change_t"] - stats["first_arrival_t"])
    assert mean_in_flight > 3.4


def test_driver_killed_then_rerun_finishes_each_row_once(
    ray_cluster: str, simulator: SimulatorProcess, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    args = (*slow_run_args(simulator, tmp_path, ray_cluster, 600), "--quiet")
    driver = subprocess.Popen(vbatch_cmd(*args), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: shard_lines(tmp_path / "out.jsonl.shards") > 100)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert not out.exists() or out.stat().st_size == 0
    second = run_cli(*args[:-1], timeout=180)
    assert second.returncode == 0, second.stderr
    assert "by an earlier run" in second.stderr
    assert_each_row_once(out, 600)
    assert simulator.stats()["requests_seen"] < 600 + 16 * 2 + 100


@pytest.mark.vllm
def test_two_actors_against_the_real_server(ray_cluster: str, vllm_url: str, tmp_path: Path
                                            ) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(40))
    base = dict(input=source, base_url=vllm_url, max_tokens=8, temperature=0.0, quiet=True)
    single = tmp_path / "single.jsonl"
    assert run(RunConfig(output=single, **base)).exit_code == 0
    sharded = tmp_path / "ray.jsonl"
    result = run(RunConfig(output=sharded, ray=True, replicas=2, shard_rows=10, **base))
    assert result.exit_code == 0 and result.stats.ok == 40
    by_index = {r["index"]: r for r in read_jsonl(single)}
    for record in read_jsonl(sharded):
        alone = by_index[record["index"]]
        assert record["id"] == alone["id"] and record["status"] == "ok"
        assert record["usage"]["prompt_tokens"] == alone["usage"]["prompt_tokens"]
        assert record["text"]


@pytest.mark.vllm
def test_each_actor_starts_its_own_server(ray_cluster: str, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows(30))
    out = tmp_path / "out.jsonl"
    messages = io.StringIO()
    result = run(RunConfig(input=source, output=out, max_tokens=8, ray=True, replicas=2,
                           shard_rows=10), stream=messages)
    assert result.exit_code == 0 and result.stats.ok == 30
    assert sorted(r["index"] for r in read_jsonl(out)) == list(range(30))
    said = messages.getvalue()
    # The driver's check gives the workers the model's own context where their CPU servers'
    # KV space holds it (bf16 on an AVX-512 CPU), else the context the data needs (float32 on
    # an AVX2 one takes twice the bytes per token).
    assert ("--max-model-len 8192: the model's own" in said
            or re.search(r"--max-model-len \d+: fits the longest prompt", said))
    started = [line for line in said.splitlines() if line.startswith("vbatch: Ray worker ")]
    ports = {line.rsplit(":", 1)[1] for line in started}
    assert len(ports) == 2
    for replica in (0, 1):
        assert "Application startup complete" in (
            tmp_path / f"out.jsonl.server.{replica}.log").read_text()
    # ray.kill returns before the actor's process has exited.
    wait_for(lambda: not shard_workers(), timeout=15)


def test_ctrl_c_stops_the_actors_cleanly_and_a_rerun_completes(
    ray_cluster: str, simulator: SimulatorProcess, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    args = slow_run_args(simulator, tmp_path, ray_cluster, 600)
    driver = subprocess.Popen(vbatch_cmd(*args), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    wait_for(lambda: shard_lines(tmp_path / "out.jsonl.shards") > 100)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 130, stderr
    assert "interrupted" in stderr
    first = read_jsonl(out)
    assert 100 < len(first) < 600
    assert not (tmp_path / "out.jsonl.shards").exists()
    second = run_cli(*args, "--quiet", timeout=180)
    assert second.returncode == 0, second.stderr
    assert_each_row_once(out, 600)


def test_relative_paths_work_in_workers_started_elsewhere(
    ray_cluster: str, simulator: SimulatorProcess, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(tmp_path / "in.jsonl", rows(60))
    monkeypatch.chdir(tmp_path)
    result = run(RunConfig(input=Path("in.jsonl"), output=Path("out.jsonl"),
                           base_url=simulator.url, max_tokens=2, ray=True, replicas=2,
                           shard_rows=20, quiet=True))
    assert result.exit_code == 0 and result.stats.ok == 60
    assert sorted(r["index"] for r in read_jsonl(tmp_path / "out.jsonl")) == list(range(60))


def prefixed_rows(tmp_path: Path, systems: int) -> Path:
    """90 chat rows whose system prompts (of 300 words) take turns among ``systems``."""
    prompts = [f"{chr(65 + k)} " * 300 for k in range(systems)]
    data = [{"id": f"r{i}", "messages": [{"role": "system", "content": prompts[i % systems]},
                                         {"role": "user", "content": f"q {i}"}]}
            for i in range(90)]
    return write_jsonl(tmp_path / "in.jsonl", data)


def test_group_by_prefix_groups_each_shard(ray_cluster: str, simulator: SimulatorProcess,
                                           tmp_path: Path) -> None:
    source, out = prefixed_rows(tmp_path, 3), tmp_path / "out.jsonl"
    result = run(RunConfig(input=source, output=out, base_url=simulator.url, max_tokens=2,
                           concurrency=1, ray=True, replicas=1, shard_rows=30,
                           group_by_prefix=True, ordered=True, quiet=True))
    assert result.exit_code == 0
    sent = [body["messages"][0]["content"][0] for body in simulator.requests()]
    assert len(sent) == 90
    assert sum(1 for a, b in itertools.pairwise(sent) if a != b) <= 3 * 3 - 1
    assert [r["index"] for r in read_jsonl(out)] == list(range(90))


def test_auto_is_decided_once_by_the_driver_and_the_workers_group(
        ray_cluster: str, simulator: SimulatorProcess, tmp_path: Path) -> None:
    source, out = prefixed_rows(tmp_path, 3), tmp_path / "out.jsonl"
    result = run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url,
                     "--max-tokens", "2", "--concurrency", "1", "--ray", ray_cluster,
                     "--replicas", "1", "--shard-rows", "30", timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("grouping rows by prompt prefix") == 1
    sent = [body["messages"][0]["content"][0] for body in simulator.requests()]
    assert len(sent) == 90
    assert sum(1 for a, b in itertools.pairwise(sent) if a != b) <= 3 * 3 - 1
