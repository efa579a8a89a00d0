"""Pooling jobs on the real CPU server with the embedded pooling model (all-MiniLM-L6-v2):
vLLM's vectors match the sentence-transformers recipe (in float32 and float16), score and
rerank rows and vLLM's own score and rerank batches are answered, a model without /classify
gives each row a clear reason, and a batch file of embedding lines picks that model by
itself."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vbatch.servers.default_model import DEFAULT_POOLING_MODEL_NAME, prepare_pooling_model

from .conftest import read_jsonl, run_cli, write_jsonl
from .test_run_batch import RERANK_BATCH, SCORE_BATCH, assert_batch_output_line
from .test_vllm_run_batch import VALIDATE
from .vllm_helpers import ServeProcess

pytestmark = pytest.mark.vllm

TEXTS = ["The cat sat on the mat.", "vLLM serves language models fast.", "Hello world!",
         "Paris is the capital of France.", "Embeddings map text to vectors."]


def sentence_transformers_recipe(texts: list[str]) -> list[list[float]]:
    """Mean pooling over the attention mask, then L2 normalisation, with transformers."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = str(prepare_pooling_model())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder)
    encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    vectors: list[list[float]] = torch.nn.functional.normalize(pooled, dim=1).tolist()
    return vectors


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / ((sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5))


@pytest.fixture(scope="module")
def pooling_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``vbatch serve --pooling``: the embedded pooling model, for this module's tests."""
    log = tmp_path_factory.mktemp("pooling") / "serve.log"
    server = ServeProcess(log, "--pooling", "--max-model-len", "256")
    yield server.url
    server.stop()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_embeddings_of_a_dataset_match_the_recipe(pooling_url: str, tmp_path: Path,
                                                  dtype: str) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl",
                         [{"id": f"d{i}", "text": text} for i, text in enumerate(TEXTS)])
    out = tmp_path / "vectors.jsonl"
    done = run_cli("run", str(source), "-o", str(out), "--endpoint", "embeddings",
                   "--prompt-field", "text", "--ordered", "--base-url", pooling_url,
                   "--embedding-dtype", dtype)
    assert done.returncode == 0, done.stderr
    records = read_jsonl(out)
    expected = sentence_transformers_recipe(TEXTS)
    assert [len(r["embedding"]) for r in records] == [384] * len(TEXTS)
    assert min(cosine(r["embedding"], e) for r, e in zip(records, expected, strict=True)) >= 0.99


def test_score_and_rerank_rows_rank_the_right_document_first(pooling_url: str,
                                                             tmp_path: Path) -> None:
    question = "What is the capital of France?"
    documents = ["The capital of Brazil is Brasilia.", "The capital of France is Paris."]
    source = write_jsonl(tmp_path / "pairs.jsonl", [
        {"id": "pair", "text_1": question, "text_2": documents[1]},
        {"id": "docs", "query": question, "documents": documents},
    ])
    scored = tmp_path / "scores.jsonl"
    done = run_cli("run", str(source), "-o", str(scored), "--endpoint", "score", "--ordered",
                   "--base-url", pooling_url)
    assert done.returncode == 0, done.stderr
    pair, docs = read_jsonl(scored)
    assert 0 < pair["score"] <= 1 and docs["score"][1] > docs["score"][0]
    ranked = tmp_path / "ranked.jsonl"
    done = run_cli("run", str(source), "-o", str(ranked), "--endpoint", "rerank", "--ordered",
                   "--base-url", pooling_url, "--on-bad-row", "skip")
    assert done.returncode == 1, done.stderr
    lacking, rerank = read_jsonl(ranked)
    assert lacking["error"]["type"] == "bad_input" and "query" in lacking["error"]["message"]
    assert [r["index"] for r in rerank["results"]] == [1, 0]


@pytest.mark.parametrize("lines", [SCORE_BATCH, RERANK_BATCH], ids=["score", "rerank"])
def test_vllms_score_and_rerank_batches(pooling_url: str, tmp_path: Path,
                                        lines: list[dict[str, object]]) -> None:
    source = tmp_path / "batch.jsonl"
    source.write_text("\n".join(json.dumps(line).replace("sim-model", DEFAULT_POOLING_MODEL_NAME)
                                for line in lines))
    out = tmp_path / "results.jsonl"
    done = run_cli("run-batch", "-i", str(source), "-o", str(out), "--base-url", pooling_url)
    assert done.returncode == 0, done.stderr
    check = run_python(VALIDATE, str(out))
    assert check.stdout.strip() == "valid", check.stderr[-2000:]
    for line in read_jsonl(out):
        assert_batch_output_line(line)
        assert line["error"] is None


def test_a_model_without_classify_gives_each_row_the_reason(pooling_url: str,
                                                            tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "reviews.jsonl", [{"prompt": "I loved it"}])
    out = tmp_path / "labels.jsonl"
    done = run_cli("run", str(source), "-o", str(out), "--endpoint", "classify",
                   "--base-url", pooling_url)
    assert done.returncode == 1
    (record,) = read_jsonl(out)
    assert record["error"]["status_code"] == 404
    assert "no /classify route" in record["error"]["message"]


def test_a_batch_of_embedding_lines_picks_the_pooling_model(tmp_path: Path) -> None:
    lines = [{"custom_id": f"request-{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": DEFAULT_POOLING_MODEL_NAME, "input": text}}
             for i, text in enumerate(TEXTS[:3], start=1)]
    lines.append({"custom_id": "request-4", "method": "POST", "url": "/v1/embeddings",
                  "body": {"model": "NonExistModel", "input": "Hello world!"}})
    source = tmp_path / "embed.jsonl"
    source.write_text("\n".join(json.dumps(line) for line in lines))
    out = tmp_path / "results.jsonl"
    done = run_cli("run-batch", "-i", str(source), "-o", str(out), "--retry-delay", "0.01",
                   timeout=900)
    assert done.returncode == 0, done.stderr
    results = {line["custom_id"]: line for line in read_jsonl(out)}
    assert [results[f"request-{i}"]["error"] is None for i in range(1, 5)] == [
        True, True, True, False]
    vector = results["request-1"]["response"]["body"]["data"][0]["embedding"]
    assert cosine(vector, sentence_transformers_recipe(TEXTS[:1])[0]) >= 0.99
