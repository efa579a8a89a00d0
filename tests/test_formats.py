"""Files beyond JSONL: Arrow IPC and saved datasets in; Parquet out, crash-safe; the Python
API's cache after kill -9 and after Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vbatch import RunConfig

from .conftest import InProcessServer, SimulatorProcess, read_jsonl, vbatch_cmd, write_jsonl


def lines(path: Path) -> int:
    return sum(1 for line in path.read_bytes().split(b"\n") if line.strip()) if path.exists() else 0


def wait_for(path: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while lines(path) < count:
        assert time.monotonic() < deadline, f"{path} never reached {count} lines"
        time.sleep(0.05)


def test_arrow_files_and_saved_datasets_are_inputs(fake_server: InProcessServer,
                                                   tmp_path: Path) -> None:
    table = pa.table({"id": [f"r{i}" for i in range(50)],
                      "prompt": [f"question {i}" for i in range(50)]})
    arrow_file = tmp_path / "rows.arrow"
    with pa.ipc.new_file(arrow_file, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=7):
            writer.write_batch(batch)
    saved = tmp_path / "saved"
    datasets.Dataset(table).save_to_disk(str(saved), max_shard_size="1KB")
    assert len(list(saved.glob("*.arrow"))) > 1
    for source in (arrow_file, saved):
        out = tmp_path / f"{source.name}.jsonl"
        result = fake_server.run(RunConfig(input=source, output=out, base_url=fake_server.url,
                                           max_tokens=2, quiet=True, ordered=True))
        assert result.exit_code == 0
        records = read_jsonl(out)
        assert [r["id"] for r in records] == [f"r{i}" for i in range(50)]
        assert [r["index"] for r in records] == list(range(50))


def test_parquet_output_survives_kill_9_and_resumes_once(simulator: SimulatorProcess,
                                                         tmp_path: Path) -> None:
    simulator.configure(latency=0.05)
    source = write_jsonl(tmp_path / "in.jsonl",
                         [{"id": f"r{i}", "prompt": f"q {i}", "topic": i % 4} for i in range(400)])
    out = tmp_path / "out.parquet"
    args = ["run", str(source), "-o", str(out), "--base-url", simulator.url, "--max-tokens", "3",
            "--concurrency", "16", "--keep", "topic", "--quiet", "--ordered"]
    process = subprocess.Popen(vbatch_cmd(*args))
    journal = tmp_path / "out.parquet.journal.jsonl"
    wait_for(journal, 50)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    assert subprocess.run(vbatch_cmd(*args), timeout=120).returncode == 0
    frame = pd.read_parquet(out)
    assert list(frame["id"]) == [f"r{i}" for i in range(400)]
    assert list(frame["topic"]) == [i % 4 for i in range(400)]
    schema = pq.read_schema(out)
    assert schema.field("index").type == pa.int64() and schema.field("text").type == pa.string()
    assert schema.field("prompt_tokens").type == pa.int64()
    assert Counter(r["id"] for r in read_jsonl(journal)) == Counter(frame["id"])


SCRIPT = """
import sys, vbatch
try:
    out = vbatch.generate([f"prompt {{i}}" for i in range(300)], base_url="{url}",
                          max_tokens=3, concurrency=8, cache=sys.argv[1], progress=False)
except KeyboardInterrupt as stop:
    print("stopped:", stop)
    sys.exit(130)
print("done", len(out), sum(r["status"] == "ok" for r in out))
"""


def test_the_cache_after_kill_9_and_after_ctrl_c(simulator: SimulatorProcess,
                                                 tmp_path: Path) -> None:
    simulator.configure(latency=0.05)
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SCRIPT.format(url=simulator.url)))
    cache = tmp_path / "cache.jsonl"
    command = [sys.executable, str(script), str(cache)]
    killed = subprocess.Popen(command)
    wait_for(cache, 40)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    interrupted = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    wait_for(cache, lines(cache) + 40)
    interrupted.send_signal(signal.SIGINT)
    said, _ = interrupted.communicate(timeout=60)
    assert interrupted.returncode == 130 and "stopped:" in said
    before = lines(cache)
    assert before < 300
    simulator.reset()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.stdout.strip() == "done 300 300", finished.stderr
    assert simulator.stats()["requests_seen"] == 300 - before
    assert Counter(r["id"] for r in read_jsonl(cache)) == Counter(str(i) for i in range(300))


def test_embeddings_of_a_plain_dataset_to_parquet(fake_server: InProcessServer,
                                                  tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl",
                         [{"id": f"d{i}", "text": f"document number {i}"} for i in range(20)])
    out = tmp_path / "vectors.parquet"
    result = fake_server.run(RunConfig(input=source, output=out, base_url=fake_server.url,
                                       endpoint="embeddings", prompt_field="text", quiet=True,
                                       ordered=True))
    assert result.exit_code == 0 and result.stats.empty == 0
    sent = fake_server.requests()
    assert {"input", "model"} <= set(sent[0]) and "messages" not in sent[0]
    table = pq.read_table(out)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 8)
    vectors = table.column("embedding").to_pylist()
    assert len(vectors) == 20 and all(abs(sum(v * v for v in vec) - 1) < 1e-3 for vec in vectors)
    journal = read_jsonl(tmp_path / "vectors.parquet.journal.jsonl")
    assert {"embedding", "usage"} <= set(journal[0]) and "text" not in journal[0]
