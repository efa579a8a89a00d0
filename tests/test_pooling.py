"""Pooling jobs from a plain dataset against the simulator: score, rerank and classify rows,
embeddings in base64 (float32 and float16), and what a row that lacks its fields gets."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vbatch import RunConfig, RunControl
from vbatch.endpoints import endpoint_kind
from vbatch.errors import ConfigError, InvalidResponseError
from vbatch.testing.pooling import vector_of

from .conftest import InProcessServer, SimulatorProcess, read_jsonl, run_cli, write_jsonl

QUERY = "What is the capital of France?"
DOCUMENTS = ["The capital of Brazil is Brasilia.", "The capital of France is Paris."]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def config(fake: InProcessServer, source: Path, out: Path, endpoint: str,
           **options: object) -> RunConfig:
    return RunConfig(input=source, output=out, base_url=fake.url, endpoint=endpoint,
                     quiet=True, ordered=True, on_bad_row="skip", **options)  # type: ignore[arg-type]


def test_score_rows_are_pairs_or_a_query_and_documents(fake_server: InProcessServer,
                                                        tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "pairs.jsonl", [
        {"id": "pair", "text_1": QUERY, "text_2": DOCUMENTS[1]},
        {"id": "docs", "query": QUERY, "documents": DOCUMENTS},
        {"id": "half", "text_1": QUERY},
        {"id": "typed", "text_1": 3, "text_2": "x"},
    ])
    out = tmp_path / "scores.jsonl"
    result = fake_server.run(config(fake_server, source, out, "score"))
    assert result.stats.ok == 2 and result.stats.failed == 2
    records = {r["id"]: r for r in read_jsonl(out)}
    assert records["pair"]["score"] == pytest.approx(
        cosine(vector_of(QUERY), vector_of(DOCUMENTS[1])), abs=1e-5)
    assert records["docs"]["score"] == pytest.approx(
        [cosine(vector_of(QUERY), vector_of(d)) for d in DOCUMENTS], abs=1e-5)
    assert "text_1 and text_2, or query and documents" in records["half"]["error"]["message"]
    assert "pairs.jsonl:4: field 'text_1': expected a string" in records["typed"]["error"][
        "message"]
    sent = fake_server.requests()
    assert {"text_1", "text_2", "model"} == set(sent[0])
    assert {"queries", "documents", "model"} == set(sent[1])
    assert all("messages" not in body and "max_tokens" not in body for body in sent)


def test_rerank_results_most_relevant_first_to_parquet(fake_server: InProcessServer,
                                                       tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "queries.jsonl",
                         [{"id": f"q{i}", "query": f"{QUERY} {i}", "documents": DOCUMENTS}
                          for i in range(5)])
    out = tmp_path / "ranked.parquet"
    result = fake_server.run(config(fake_server, source, out, "rerank"))
    assert result.exit_code == 0 and result.stats.ok == 5
    rows = pq.read_table(out).to_pylist()
    assert [row["id"] for row in rows] == [f"q{i}" for i in range(5)]
    for row in rows:
        scores = [r["relevance_score"] for r in row["results"]]
        assert sorted(r["index"] for r in row["results"]) == [0, 1]
        assert scores == sorted(scores, reverse=True)


def test_classify_rows_get_a_label_and_probabilities(simulator: SimulatorProcess,
                                                     tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "reviews.jsonl",
                         [{"text": t} for t in ("I loved it", "Awful", "Fine I guess")])
    out = tmp_path / "labels.jsonl"
    done = run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url,
                   "--endpoint", "classify", "--prompt-field", "text", "--ordered")
    assert done.returncode == 0, done.stderr
    records = read_jsonl(out)
    assert [r["label"] in ("negative", "positive") for r in records] == [True] * 3
    assert all(sum(r["probs"]) == pytest.approx(1, abs=1e-5) for r in records)
    assert simulator.stats()["statuses"] == {"200": 1}  # three rows in one request


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_embeddings_travel_as_base64_in_the_dtype_asked(fake_server: InProcessServer,
                                                        tmp_path: Path, dtype: str) -> None:
    texts = [f"text number {i}" for i in range(6)]
    source = write_jsonl(tmp_path / "docs.jsonl", [{"prompt": t} for t in texts])
    out = tmp_path / "vectors.jsonl"
    result = fake_server.run(config(fake_server, source, out, "embeddings",
                                    embedding_dtype=dtype))
    assert result.exit_code == 0
    sent = fake_server.requests()[0]
    assert sent["encoding_format"] == "base64"
    assert sent.get("embed_dtype", "float32") == dtype
    tolerance = 1e-6 if dtype == "float32" else 1e-3
    for record, text in zip(read_jsonl(out), texts, strict=True):
        assert record["embedding"] == pytest.approx(vector_of(text), abs=tolerance)


def test_an_embedding_answer_as_numbers_or_base64_is_read_and_a_bad_one_refused() -> None:
    kind = endpoint_kind("embeddings", "float16")
    packed = base64.b64encode(struct.pack("<2e", 0.5, -0.25)).decode()
    assert kind.answer({"data": [{"embedding": packed}]}, 1)["embedding"] == [0.5, -0.25]
    assert kind.answer({"data": [{"embedding": [0.1, 0.2]}]}, 1)["embedding"] == [0.1, 0.2]
    with pytest.raises(InvalidResponseError, match="not whole float16"):
        kind.answer({"data": [{"embedding": base64.b64encode(b"abc").decode()}]}, 1)
    with pytest.raises(InvalidResponseError, match="not valid base64"):
        kind.answer({"data": [{"embedding": "%%%"}]}, 1)


def test_options_that_do_not_fit_a_pooling_endpoint_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--template makes one prompt"):
        RunConfig(input=tmp_path / "in.jsonl", output=tmp_path / "out.jsonl", endpoint="score",
                  template="{{ a }}")
    with pytest.raises(ConfigError, match="--embedding-dtype must be one of 'float32', 'float16'"):
        RunConfig(input=tmp_path / "in.jsonl", output=tmp_path / "out.jsonl",
                  endpoint="embeddings", embedding_dtype="int8")


def test_embedding_rows_share_requests_and_each_gets_its_record(fake_server: InProcessServer,
                                                                tmp_path: Path) -> None:
    texts = [f"text number {i} " + "word " * (i % 7) for i in range(40)]
    source = write_jsonl(tmp_path / "docs.jsonl", [{"prompt": t} for t in texts])
    out = tmp_path / "vectors.jsonl"
    result = fake_server.run(config(fake_server, source, out, "embeddings",
                                    inputs_per_request=16))
    assert result.exit_code == 0 and result.stats.ok == 40
    sent = fake_server.requests()
    assert sorted(len(body["input"]) for body in sent) == [8, 16, 16]
    records = read_jsonl(out)
    for record, text in zip(records, texts, strict=True):
        assert record["embedding"] == pytest.approx(vector_of(text), abs=1e-6)
        assert record["usage"]["shared_by"] in (8, 16)
    assert sum(r["usage"]["prompt_tokens"] for r in records) == sum(
        len(t.split()) + 1 for t in texts)
    assert len({r["request_hash"] for r in records}) == 40


def test_a_refused_pack_is_sent_again_row_by_row(fake_server: InProcessServer,
                                                 tmp_path: Path) -> None:
    texts = [f"text {i}" for i in range(10)]
    texts[3] = "this one holds SIM_REJECT"
    source = write_jsonl(tmp_path / "docs.jsonl", [{"prompt": t} for t in texts])
    out = tmp_path / "vectors.jsonl"
    result = fake_server.run(config(fake_server, source, out, "embeddings"))
    assert result.stats.ok == 9 and result.stats.failed == 1
    records = read_jsonl(out)
    assert [r["status"] for r in records].index("failed") == 3
    assert records[3]["error"]["status_code"] == 400
    assert len(fake_server.requests()) == 1 + 10


def test_a_packed_run_stopped_midway_resumes_each_row_once(fake_server: InProcessServer,
                                                           tmp_path: Path) -> None:
    fake_server.configure(latency=0.01)
    source = write_jsonl(tmp_path / "docs.jsonl", [{"prompt": f"row {i}"} for i in range(400)])
    out = tmp_path / "vectors.jsonl"
    seen: list[str] = []

    def stop_early(record: dict[str, object]) -> None:
        seen.append(str(record["id"]))
        if len(seen) == 48:
            control.stop()

    control = RunControl(on_record=stop_early)
    first = fake_server.run(config(fake_server, source, out, "embeddings", concurrency=2),
                            control=control)
    assert first.stats.ok < 400
    done_first = first.stats.ok
    fake_server.reset()
    second = fake_server.run(config(fake_server, source, out, "embeddings"))
    assert second.exit_code == 0
    assert sorted(r["id"] for r in read_jsonl(out)) == sorted(str(i) for i in range(400))
    assert sum(len(body["input"]) for body in fake_server.requests()) == 400 - done_first
