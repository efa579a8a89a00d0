"""The Python API: every input kind back as the same kind, in input order; running loops;
stream; cache; errors; all against the simulated server in process."""

from __future__ import annotations

import asyncio
import tracemalloc
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import psutil
import pyarrow as pa
import pytest

import vbatch
from vbatch.api.rows import spool_rows

from .conftest import InProcessServer


def options(fake: InProcessServer, **more: Any) -> dict[str, Any]:
    return {"base_url": fake.url, "transport": fake.transport, "max_tokens": 4,
            "progress": False, "retry_base_delay": 0.01, **more}


def test_prompts_in_records_out_in_input_order(fake_server: InProcessServer) -> None:
    fake_server.configure(slow_rate=0.3, slow_latency=0.05, seed=1)
    prompts = [f"question number {i}" for i in range(300)]
    out = vbatch.generate(prompts, **options(fake_server))
    assert [r["index"] for r in out] == list(range(300))
    assert [r["id"] for r in out] == [str(i) for i in range(300)]
    assert {r["status"] for r in out} == {"ok"} and all(r["text"] for r in out)
    assert fake_server.stats()["requests_seen"] == 300


def test_rows_as_dicts_with_ids_messages_and_a_template(fake_server: InProcessServer) -> None:
    rows = [{"id": "a", "topic": "tides"}, {"id": "b", "topic": "stars"}]
    out = vbatch.generate(rows, template="Explain {{ topic }}", **options(fake_server))
    assert [r["id"] for r in out] == ["a", "b"]
    sent = sorted(body["messages"][0]["content"] for body in fake_server.requests())
    assert sent == ["Explain stars", "Explain tides"]
    chat = [{"messages": [{"role": "user", "content": "hi"}]}]
    assert vbatch.generate(chat, **options(fake_server))[0]["status"] == "ok"


def test_a_dataframe_comes_back_with_its_index_and_columns(fake_server: InProcessServer) -> None:
    frame = pd.DataFrame({"question": ["a b", "c d", "e f g"], "text": ["x", "y", "z"]},
                         index=pd.Index([10, 20, 30], name="key"))
    out = vbatch.generate(frame, prompt_field="question", **options(fake_server))
    assert isinstance(out, pd.DataFrame)
    assert list(out.index) == [10, 20, 30] and out.index.name == "key"
    assert list(out["question"]) == ["a b", "c d", "e f g"] and list(out["text"]) == list("xyz")
    assert list(out["status"]) == ["ok"] * 3 and out["text_result"].str.len().min() > 0
    # The simulator counts the words of "user: <question>".
    assert list(out["prompt_tokens"]) == [3, 3, 4]
    assert {"finish_reason", "error", "completion_tokens"} <= set(out.columns)


def test_arrow_tables_readers_and_datasets(fake_server: InProcessServer) -> None:
    table = pa.table({"prompt": ["one", "two", "three"], "n": [1, 2, 3]})
    out = vbatch.generate(table, **options(fake_server))
    assert isinstance(out, pa.Table) and out.column("n").to_pylist() == [1, 2, 3]
    assert out.column("status").to_pylist() == ["ok"] * 3
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=1))
    from_reader = vbatch.generate(reader, **options(fake_server))
    assert from_reader.column("index").to_pylist() == [0, 1, 2]
    dataset = datasets.Dataset.from_dict({"text": ["hola", "adios"]}).select([1, 0])
    translated = vbatch.generate(dataset, template="Translate: {{ text }}", **options(fake_server))
    assert isinstance(translated, datasets.Dataset)
    assert translated["text"] == ["adios", "hola"]
    assert translated["status"] == ["ok", "ok"] and all(translated["text_result"])


def test_inside_a_running_event_loop(fake_server: InProcessServer) -> None:
    async def notebook_cell() -> tuple[list[Any], list[Any]]:
        blocking = vbatch.generate(["a", "b"], **options(fake_server))
        awaited = await vbatch.agenerate(["c", "d", "e"], **options(fake_server))
        return blocking, awaited

    blocking, awaited = asyncio.run(notebook_cell())
    assert [r["status"] for r in blocking] == ["ok", "ok"]
    assert [r["index"] for r in awaited] == [0, 1, 2]


def test_run_inside_a_running_event_loop(fake_server: InProcessServer, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    config = vbatch.RunConfig(input=source, output=tmp_path / "out.jsonl",
                              base_url=fake_server.url, quiet=True, max_tokens=2)

    async def notebook_cell() -> vbatch.RunResult:
        return fake_server.run(config)

    assert asyncio.run(notebook_cell()).stats.ok == 2


def test_stream_yields_each_record_as_it_completes(fake_server: InProcessServer) -> None:
    fake_server.configure(slow_rate=0.5, slow_latency=0.05, seed=3)

    async def consume(stop_after: int | None) -> list[dict[str, Any]]:
        seen = []
        async for record in vbatch.stream((f"p {i}" for i in range(200)),
                                          **options(fake_server, concurrency=8)):
            seen.append(record)
            if stop_after is not None and len(seen) == stop_after:
                break
        return seen

    records = asyncio.run(consume(None))
    assert sorted(r["index"] for r in records) == list(range(200))
    assert [r["index"] for r in records] != list(range(200))
    fake_server.reset()
    early = asyncio.run(consume(10))
    assert len(early) == 10 and fake_server.stats()["requests_seen"] < 100


def test_cache_makes_a_rerun_send_only_what_is_missing(fake_server: InProcessServer,
                                                       tmp_path: Path) -> None:
    cache = tmp_path / "answers.jsonl"
    prompts = [f"q {i}" for i in range(40)]
    first = vbatch.generate(prompts[:25], cache=cache, **options(fake_server))
    fake_server.reset()
    second = vbatch.generate(prompts, cache=cache, **options(fake_server))
    assert fake_server.stats()["requests_seen"] == 15
    assert [r["text"] for r in second[:25]] == [r["text"] for r in first]
    fake_server.reset()
    shuffled = list(reversed(prompts))
    rows = [{"id": str(i), "prompt": p} for i, p in zip(range(39, -1, -1), shuffled, strict=True)]
    third = vbatch.generate(rows, cache=cache, **options(fake_server))
    assert fake_server.stats()["requests_seen"] == 0
    assert [r["id"] for r in third] == [str(i) for i in range(39, -1, -1)]
    assert [r["index"] for r in third] == list(range(40))


def test_parquet_output_from_python(fake_server: InProcessServer, tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    out = vbatch.generate([f"q {i}" for i in range(30)], output=target, ordered=True,
                          **options(fake_server))
    assert len(out) == 30
    frame = pd.read_parquet(target)
    assert list(frame["index"]) == list(range(30)) and set(frame["status"]) == {"ok"}
    loaded = datasets.load_dataset("parquet", data_files=str(target), split="train")
    assert loaded.num_rows == 30


def test_bad_options_and_rows_raise_before_sending(fake_server: InProcessServer) -> None:
    with pytest.raises(vbatch.ConfigError, match="max_tokens"):
        vbatch.generate(["a"], **options(fake_server, max_tokens=0))
    with pytest.raises(vbatch.InputError, match="row 3"):
        vbatch.generate(["a", "b", 7], **options(fake_server))
    with pytest.raises(vbatch.ConfigError, match="DataFrame"):
        vbatch.generate("just one prompt", **options(fake_server))
    with pytest.raises(vbatch.ConfigError, match="cache= or output="):
        vbatch.generate(["a"], cache="a.jsonl", output="b.jsonl", **options(fake_server))
    assert fake_server.stats()["requests_seen"] == 0


def test_a_failing_row_is_a_record_not_an_exception(fake_server: InProcessServer) -> None:
    out = vbatch.generate(["fine", "SIM_REJECT this", "fine too"], **options(fake_server))
    assert [r["status"] for r in out] == ["ok", "failed", "ok"]
    assert "simulated rejection" in out[1]["error"]["message"]


def test_a_generator_is_spooled_in_constant_memory(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        spooled = spool_rows((f"prompt number {i}" for i in range(300_000)), "records",
                             tmp_path / "in.jsonl", "id")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert spooled.count == 300_000
    assert peak < 16 * 1024 * 1024


def test_stream_of_a_long_generator_keeps_memory_flat(fake_server: InProcessServer) -> None:
    process = psutil.Process()
    sizes: dict[int, int] = {}

    async def consume() -> int:
        count = 0
        async for _ in vbatch.stream((f"prompt {i}" for i in range(100_000)),
                                     **options(fake_server, max_tokens=2)):
            count += 1
            if count % 20_000 == 0:
                sizes[count] = process.memory_info().rss
        return count

    assert asyncio.run(consume()) == 100_000
    assert max(sizes.values()) - sizes[20_000] < 25 * 1024 * 1024
