"""The response cache (``--cache-dir``): deterministic answers reused across runs and within
one, never for another model, shared safely by two processes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from vbatch import RunConfig
from vbatch.cache.store import ResponseCache, cache_key, deterministic, parse_size
from vbatch.engine.items import WorkItem
from vbatch.engine.reuse import Reuse
from vbatch.prepare.batch_builder import BatchRequestBuilder
from vbatch.prepare.builder import RequestBuilder
from vbatch.settings import RequestSettings
from vbatch.source.readers import RawRow

from .conftest import InProcessServer, read_jsonl, run_cli, vbatch_cmd, write_jsonl


def rows(tmp_path: Path, count: int, distinct: int | None = None) -> Path:
    distinct = distinct or count
    return write_jsonl(tmp_path / f"in-{count}-{distinct}.jsonl",
                       [{"id": f"r{i}", "prompt": f"question {i % distinct}"}
                        for i in range(count)])


def config(server: InProcessServer, source: Path, out: Path, cache: Path,
           **options: Any) -> RunConfig:
    return RunConfig(input=source, output=out, base_url=server.url, quiet=True, max_tokens=6,
                     cache_dir=cache, **{"temperature": 0, **options})


def test_a_second_output_over_the_same_requests_sends_nothing(fake_server: InProcessServer,
                                                              tmp_path: Path) -> None:
    source, cache = rows(tmp_path, 10_000), tmp_path / "cache"
    fake_server.run(config(fake_server, source, tmp_path / "a.jsonl", cache))
    sent_first = fake_server.stats()["requests_seen"]
    assert sent_first == 10_000
    fake_server.reset()
    result = fake_server.run(config(fake_server, source, tmp_path / "b.jsonl", cache))
    assert fake_server.stats()["requests_seen"] == 0
    assert result.stats.cached == 10_000 and "cached: 10000 answers" in \
        result.stats.summary_text()
    first = {r["id"]: r for r in read_jsonl(tmp_path / "a.jsonl")}
    for record in read_jsonl(tmp_path / "b.jsonl"):
        assert record["cached"] is True and record["attempts"] == 0
        assert record["text"] == first[record["id"]]["text"]
        assert record["request_hash"] == first[record["id"]]["request_hash"]


def test_identical_requests_of_one_run_are_sent_once(fake_server: InProcessServer,
                                                     tmp_path: Path) -> None:
    fake_server.configure(latency=0.01)
    result = fake_server.run(config(fake_server, rows(tmp_path, 1000, 100),
                                    tmp_path / "a.jsonl", tmp_path / "cache"))
    assert fake_server.stats()["requests_seen"] == 100
    assert result.stats.ok == 1000 and result.stats.cached == 900


def test_sampling_without_a_seed_reuses_nothing(fake_server: InProcessServer,
                                                tmp_path: Path) -> None:
    source, cache = rows(tmp_path, 50, 5), tmp_path / "cache"
    fake_server.run(config(fake_server, source, tmp_path / "a.jsonl", cache, temperature=0.8))
    assert fake_server.stats()["requests_seen"] == 50
    assert ResponseCache(cache, 1 << 30).info().answers == 0
    fake_server.reset()
    fake_server.run(config(fake_server, source, tmp_path / "b.jsonl", cache, temperature=0.8,
                           seed=3))
    assert fake_server.stats()["requests_seen"] == 5


def test_another_served_model_misses(fake_server: InProcessServer, tmp_path: Path) -> None:
    source, cache = rows(tmp_path, 20), tmp_path / "cache"
    fake_server.run(config(fake_server, source, tmp_path / "a.jsonl", cache))
    fake_server.configure(max_model_len=4096)
    fake_server.reset()
    fake_server.run(config(fake_server, source, tmp_path / "b.jsonl", cache))
    assert fake_server.stats()["requests_seen"] == 20


def test_two_processes_fill_one_cache_at_once(simulator: Any, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    simulator.configure(latency=0.002)
    sources = [write_jsonl(tmp_path / f"in{k}.jsonl",
                           [{"id": f"r{i}", "prompt": f"part {k} question {i}"}
                            for i in range(3000)]) for k in (0, 1)]
    processes = [subprocess.Popen(vbatch_cmd("run", str(source), "-o",
                                             str(tmp_path / f"out{k}.jsonl"), "--base-url",
                                             simulator.url, "--temperature", "0",
                                             "--max-tokens", "4", "--cache-dir", str(cache),
                                             "--quiet"))
                 for k, source in enumerate(sources)]
    assert [p.wait(timeout=120) for p in processes] == [0, 0]
    store = ResponseCache(cache, 1 << 30)
    assert store.info().answers == 6000
    store.close()
    info = run_cli("cache", "info", "--cache-dir", str(cache))
    assert info.returncode == 0 and "6000 answers" in info.stdout
    simulator.reset()
    for k, source in enumerate(sources):
        again = run_cli("run", str(source), "-o", str(tmp_path / f"again{k}.jsonl"),
                        "--base-url", simulator.url, "--temperature", "0", "--max-tokens", "4",
                        "--cache-dir", str(cache), "--quiet")
        assert again.returncode == 0, again.stderr
    assert simulator.stats()["requests_seen"] == 0
    cleared = run_cli("cache", "clear", "--cache-dir", str(cache))
    assert cleared.returncode == 0 and "removed 6000 answers" in cleared.stdout


def test_the_least_recently_used_answers_go_past_the_size(tmp_path: Path) -> None:
    store = ResponseCache(tmp_path / "cache", 50_000)
    for i in range(2000):
        store.put(cache_key("m", "/r", str(i).encode()), {"text": "x" * 100})
    store.close()
    store = ResponseCache(tmp_path / "cache", 50_000)
    info = store.info()
    assert info.size_bytes <= 50_000 and 0 < info.answers < 2000
    assert store.get(cache_key("m", "/r", b"1999")) is not None
    store.close()
    assert parse_size("10G") == 10 << 30 and parse_size("500M") == 500 << 20
    with pytest.raises(Exception, match="is not a size"):
        parse_size("huge")


def test_the_feed_looks_answers_up_in_batches_and_keeps_the_order(tmp_path: Path) -> None:
    store = ResponseCache(tmp_path / "cache", 1 << 20)
    reuse = Reuse(store, "m", "/v1/completions")
    greedy = [WorkItem(f"r{i}", i, b'{"prompt":"p%d","temperature":0}' % i) for i in range(600)]
    for item in greedy[::3]:
        store.put(reuse.key_of(item), {"status": "ok", "text": item.row_id})
    sampled = WorkItem("s", 600, b'{"prompt":"p1"}')
    failed = {"id": "bad", "index": 601, "status": "failed"}
    out = list(reuse.ready([*greedy, sampled, failed]))
    assert [o["id"] if isinstance(o, dict) else o.row_id for o in out] == (
        [f"r{i}" for i in range(600)] + ["s", "bad"])
    reused = [o for o in out[:600] if isinstance(o, dict)]
    assert [o["text"] for o in reused] == [f"r{i}" for i in range(0, 600, 3)]
    assert all(o["cached"] and o["attempts"] == 0 for o in reused)
    assert sampled.reuse_key == b"" and out[-1] is failed
    assert store.get_many([]) == {} and len(store.get_many([reuse.key_of(greedy[0])])) == 1
    store.close()


@pytest.mark.parametrize("options, data", [
    ({"temperature": 0}, {"prompt": "p"}),
    ({"temperature": 0.7}, {"prompt": "p"}),
    ({"temperature": 0.7, "seed": 3}, {"prompt": "p"}),
    ({"temperature": 0.7, "extra_body": {"temperature": 0}}, {"prompt": "p"}),
    ({"temperature": 0, "extra_body": {"temperature": 1.0}}, {"prompt": "p"}),
    ({"seed": 1, "extra_body": {"seed": None}}, {"prompt": "p"}),
    ({}, {"prompt": "p"}),
])
def test_the_builder_knows_a_deterministic_request_before_its_body_is_read(
        options: dict[str, Any], data: dict[str, Any]) -> None:
    builder = RequestBuilder(RequestSettings.of(
        RunConfig(input=Path("in.jsonl"), output=Path("o.jsonl"), **options)), "m")
    content = builder.content(RawRow(0, "in.jsonl:1", data))
    assert builder.deterministic(content) == deterministic(orjson.loads(builder.body(content)))


@pytest.mark.parametrize("body", [{"temperature": 0}, {"seed": 5, "temperature": 1},
                                  {"temperature": 0.3}, {}])
def test_a_batch_line_is_deterministic_as_its_body_says(body: dict[str, Any]) -> None:
    builder = BatchRequestBuilder(RequestSettings.of(
        RunConfig(input=Path("in.jsonl"), output=Path("o.jsonl"))), None, pooling=False)
    line = {"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "p", **body}}
    content = builder.content(RawRow(0, "in.jsonl:1", line))
    assert builder.deterministic(content) == deterministic(body)
