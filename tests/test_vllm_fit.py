"""Fitting the context against the real vLLM server (context 512, marker: vllm)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vbatch import RunConfig
from vbatch.prepare.builder import RequestBuilder
from vbatch.prepare.tokens import LocalTokenCounter
from vbatch.servers.default_model import prepare_default_model
from vbatch.settings import RequestSettings
from vbatch.source.readers import RawRow

from .conftest import VLLM_TEST_MAX_MODEL_LEN, read_jsonl, run_cli, write_jsonl

pytestmark = pytest.mark.vllm
MAX_TOKENS = 120
SENTENCE = "The quick brown fox jumps over the lazy dog while the band plays on. "


@pytest.fixture(scope="module")
def counter() -> LocalTokenCounter:
    return LocalTokenCounter(str(prepare_default_model()))


def count(counter: LocalTokenCounter, prompt: str, endpoint: str = "chat") -> int:
    config = RunConfig(input=Path("x.jsonl"), output=Path("y.jsonl"), endpoint=endpoint)  # type: ignore[arg-type]
    builder = RequestBuilder(RequestSettings.of(config), "m")
    content = builder.content(RawRow(0, "x", {"prompt": prompt}))
    return counter.count([content])[0]


def prompt_of(counter: LocalTokenCounter, at_least: int) -> str:
    text = "Summarise: "
    while count(counter, text) < at_least:
        text += SENTENCE
    return text


@pytest.fixture(scope="module")
def overflow_input(tmp_path_factory: pytest.TempPathFactory, counter: LocalTokenCounter
                   ) -> tuple[Path, dict[str, int]]:
    limit = VLLM_TEST_MAX_MODEL_LEN
    rows = {"short": "What is the capital of Italy?",
            "medium": prompt_of(counter, limit - MAX_TOKENS + 30),
            "huge": prompt_of(counter, limit + 20)}
    tokens = {key: count(counter, text) for key, text in rows.items()}
    assert tokens["short"] + MAX_TOKENS <= limit < tokens["medium"] + MAX_TOKENS
    assert tokens["medium"] < limit < tokens["huge"]
    path = tmp_path_factory.mktemp("fit") / "in.jsonl"
    write_jsonl(path, [{"id": key, "prompt": text} for key, text in rows.items()])
    return path, tokens


def run_policy(vllm_url: str, source: Path, out: Path, policy: str, *extra: str) -> Any:
    return run_cli("run", str(source), "-o", str(out), "--base-url", vllm_url, "--max-tokens",
                   str(MAX_TOKENS), "--temperature", "0", "--on-overflow", policy, *extra,
                   timeout=600)


def test_clamp(vllm_url: str, tmp_path: Path, overflow_input: tuple[Path, dict[str, int]]
               ) -> None:
    source, tokens = overflow_input
    out = tmp_path / "out.jsonl"
    result = run_policy(vllm_url, source, out, "clamp")
    assert result.returncode == 1, result.stderr
    records = {r["id"]: r for r in read_jsonl(out)}
    assert records["short"]["status"] == "ok" and "clamped_max_tokens" not in records["short"]
    medium = records["medium"]
    assert medium["status"] == "ok"
    assert medium["clamped_max_tokens"] == VLLM_TEST_MAX_MODEL_LEN - tokens["medium"]
    assert medium["usage"]["prompt_tokens"] == tokens["medium"]
    assert medium["usage"]["completion_tokens"] <= medium["clamped_max_tokens"]
    assert not medium.get("context_truncated")
    assert records["huge"]["status"] == "failed"
    assert records["huge"]["error"]["type"] == "context_overflow"


def test_skip(vllm_url: str, tmp_path: Path, overflow_input: tuple[Path, dict[str, int]]) -> None:
    source, tokens = overflow_input
    out = tmp_path / "out.jsonl"
    result = run_policy(vllm_url, source, out, "skip")
    assert result.returncode == 1
    records = {r["id"]: r for r in read_jsonl(out)}
    assert records["short"]["status"] == "ok"
    for key in ("medium", "huge"):
        assert records[key]["status"] == "failed"
        assert records[key]["error"]["type"] == "context_overflow"
        assert records[key]["attempts"] == 0
    assert f"{tokens['medium']} prompt tokens + max_tokens {MAX_TOKENS}" in (
        records["medium"]["error"]["message"])


def test_fail(vllm_url: str, tmp_path: Path, overflow_input: tuple[Path, dict[str, int]]) -> None:
    source, tokens = overflow_input
    out = tmp_path / "out.jsonl"
    result = run_policy(vllm_url, source, out, "fail")
    assert result.returncode == 2
    assert f"medium ({tokens['medium']} tokens)" in result.stderr
    assert f"huge ({tokens['huge']} tokens)" in result.stderr
    assert not out.exists() or read_jsonl(out) == []


def test_local_tokenizer_gives_the_same_records(
    vllm_url: str, tmp_path: Path, overflow_input: tuple[Path, dict[str, int]]
) -> None:
    source, tokens = overflow_input
    out = tmp_path / "out.jsonl"
    run_policy(vllm_url, source, out, "clamp", "--tokenizer", str(prepare_default_model()))
    medium = {r["id"]: r for r in read_jsonl(out)}["medium"]
    assert medium["clamped_max_tokens"] == VLLM_TEST_MAX_MODEL_LEN - tokens["medium"]


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_plan_counts_equal_the_servers(vllm_url: str, tmp_path: Path, endpoint: str,
                                       counter: LocalTokenCounter) -> None:
    examples = Path(__file__).resolve().parent.parent / "examples" / "prompts.jsonl"
    rows = [json.loads(line) for line in examples.read_text().split("\n") if line][::5]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = run_cli("run", str(source), "-o", str(out), "--base-url", vllm_url, "--endpoint",
                     endpoint, "--max-tokens", "1", timeout=600)
    assert result.returncode == 0, result.stderr
    served = {r["id"]: r["usage"]["prompt_tokens"] for r in read_jsonl(out)}
    for row in rows:
        assert count(counter, row["prompt"], endpoint) == served[row["id"]], row["id"]
    planned = run_cli("plan", str(source), "--endpoint", endpoint, "--max-tokens", "1", "--json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    values = np.asarray(sorted(served.values()))
    assert plan["rows"] == len(rows)
    assert plan["prompt_tokens"]["min"] == values.min()
    assert plan["prompt_tokens"]["max"] == values.max()
    assert plan["prompt_tokens"]["p50"] == int(np.percentile(values, 50, method="inverted_cdf"))
