"""Embeddings on the real CPU server with the embedded pooling model (all-MiniLM-L6-v2):
vLLM's vectors match the sentence-transformers recipe, and a batch file of embedding lines
picks that model by itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vbatch.servers.default_model import DEFAULT_POOLING_MODEL_NAME, prepare_pooling_model

from .conftest import read_jsonl, run_cli, write_jsonl

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


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / ((sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5))


def test_embeddings_of_a_dataset_match_the_recipe(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl",
                         [{"id": f"d{i}", "text": text} for i, text in enumerate(TEXTS)])
    out = tmp_path / "vectors.jsonl"
    done = run_cli("run", str(source), "-o", str(out), "--endpoint", "embeddings",
                   "--prompt-field", "text", "--ordered", timeout=900)
    assert done.returncode == 0, done.stderr
    records = read_jsonl(out)
    expected = sentence_transformers_recipe(TEXTS)
    assert [len(r["embedding"]) for r in records] == [384] * len(TEXTS)
    assert min(cosine(r["embedding"], e) for r, e in zip(records, expected, strict=True)) >= 0.99


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
