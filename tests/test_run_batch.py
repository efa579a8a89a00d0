"""`vbatch run-batch`: vLLM's own run-batch test inputs (its tests/entrypoints/openai/
test_run_batch.py, rewritten to the simulator's model), file-level errors, resume by custom_id,
the error file, and `vbatch run` recognising the format."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .conftest import SimulatorProcess, read_jsonl, run_cli, vbatch_cmd

MODEL = "sim-model"
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def chat(custom_id: str, model: str = MODEL, url: str = "/v1/chat/completions",
         **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url,
            "body": {"model": model, "messages": [SYSTEM, {"role": "user",
                                                           "content": "Hello world!"}],
                     "max_tokens": 1000, **body}}


INPUT_BATCH = [chat("request-1"), chat("request-2"), chat("request-3", model="NonExistModel"),
               chat("request-4", url="/bad_url"), chat("request-5", stream="True")]
INVALID_INPUT_BATCH = [{k if k != "custom_id" else "invalid_field": v
                        for k, v in chat("request-1").items()}, chat("request-2")]
EMBEDDING_BATCH = [{"custom_id": f"request-{i}", "method": "POST", "url": "/v1/embeddings",
                    "body": {"model": model, "input": text}}
                   for i, (model, text) in enumerate([
                       (MODEL, "You are a helpful assistant."),
                       (MODEL, "You are an unhelpful assistant."), (MODEL, "Hello world!"),
                       ("NonExistModel", "Hello world!")], start=1)]

_DOCUMENTS = ["The capital of Brazil is Brasilia.", "The capital of France is Paris."]
_QUERY = "What is the capital of France?"
# vLLM's score and rerank batches; its rerank batch repeats request-2, vbatch requires unique ids.
SCORE_BATCH = [{"custom_id": f"request-{i}", "method": "POST", "url": url,
                "body": {"model": MODEL, "queries": _QUERY, "documents": _DOCUMENTS}}
               for i, url in enumerate(["/score", "/v1/score"], start=1)]
RERANK_BATCH = [{"custom_id": f"request-{i}", "method": "POST", "url": url,
                 "body": {"model": MODEL, "query": _QUERY, "documents": _DOCUMENTS}}
                for i, url in enumerate(["/rerank", "/v1/rerank", "/v2/rerank"], start=1)]


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(line) for line in lines))
    return path


def assert_batch_output_line(line: dict[str, Any]) -> None:
    """The schema of an OpenAI Batch output line (vLLM's BatchRequestOutput)."""
    assert set(line) == {"id", "custom_id", "response", "error"}
    assert isinstance(line["id"], str) and isinstance(line["custom_id"], str)
    response = line["response"]
    assert set(response) == {"status_code", "request_id", "body"}
    assert isinstance(response["status_code"], int) and isinstance(response["request_id"], str)
    if line["error"] is None:
        assert response["status_code"] == 200 and isinstance(response["body"], dict)
    else:
        assert set(line["error"]) == {"code", "message"} and response["body"] is None
        assert response["status_code"] >= 400


def test_vllms_input_batch_gives_a_line_per_request(simulator: SimulatorProcess,
                                                    tmp_path: Path) -> None:
    source = write_lines(tmp_path / "batch.jsonl", INPUT_BATCH)
    out = tmp_path / "results.jsonl"
    done = run_cli("run-batch", "-i", str(source), "-o", str(out), "--model", MODEL,
                   "--base-url", simulator.url, "--retry-delay", "0.01")
    assert done.returncode == 0, done.stderr
    lines = {line["custom_id"]: line for line in read_jsonl(out)}
    assert set(lines) == {f"request-{i}" for i in range(1, 6)}
    for line in lines.values():
        assert_batch_output_line(line)
    assert lines["request-1"]["response"]["body"]["choices"][0]["message"]["content"]
    assert lines["request-3"]["response"]["status_code"] == 404
    assert "does not exist" in lines["request-3"]["error"]["message"]
    assert "url" in lines["request-4"]["error"]["message"]
    assert "stream" in lines["request-5"]["error"]["message"]
    assert "3 requests failed" in done.stderr and "vllm run-batch" in done.stderr
    sent = simulator.requests()
    assert len(sent) == 3 and {body["max_tokens"] for body in sent} == {1000}
    assert {body["model"] for body in sent} == {MODEL, "NonExistModel"}


@pytest.mark.parametrize("lines", [SCORE_BATCH, RERANK_BATCH], ids=["score", "rerank"])
def test_vllms_score_and_rerank_batches(simulator: SimulatorProcess, tmp_path: Path,
                                        lines: list[dict[str, Any]]) -> None:
    source = write_lines(tmp_path / "batch.jsonl", lines)
    out = tmp_path / "results.jsonl"
    done = run_cli("run-batch", "-i", str(source), "-o", str(out), "--base-url", simulator.url)
    assert done.returncode == 0, done.stderr
    results = read_jsonl(out)
    assert sorted(line["custom_id"] for line in results) == [line["custom_id"] for line in lines]
    for line in results:
        assert_batch_output_line(line)
        assert line["error"] is None
        body = line["response"]["body"]
        assert len(body["data"] if "data" in body else body["results"]) == 2
    assert simulator.stats()["statuses"] == {"200": len(lines)}


def test_file_level_problems_are_all_reported_before_sending(simulator: SimulatorProcess,
                                                             tmp_path: Path) -> None:
    invalid = write_lines(tmp_path / "invalid.jsonl", INVALID_INPUT_BATCH)
    refused = run_cli("run-batch", "-i", str(invalid), "-o", str(tmp_path / "a.jsonl"),
                      "--base-url", simulator.url)
    assert refused.returncode == 2
    assert "line 1: missing_custom_id" in refused.stderr
    duplicated = tmp_path / "duplicated.jsonl"
    duplicated.write_text("\n".join([json.dumps(chat("a")), "{not json", json.dumps(chat("b")),
                                     json.dumps(chat("a"))]))
    refused = run_cli("run-batch", "-i", str(duplicated), "-o", str(tmp_path / "b.jsonl"),
                      "--base-url", simulator.url)
    assert refused.returncode == 2
    assert "line 2: invalid_json_line" in refused.stderr
    assert "line 4: duplicate_custom_id: custom_id 'a' is also on line 1" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert simulator.stats()["requests_seen"] == 0


def test_embedding_lines_and_the_error_file(simulator: SimulatorProcess, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "embed.jsonl", EMBEDDING_BATCH)
    out, errors = tmp_path / "vectors.jsonl", tmp_path / "errors.jsonl"
    done = run_cli("run", str(source), "-o", str(out), "--base-url", simulator.url,
                   "--error-file", str(errors), "--ordered")
    assert done.returncode == 0, done.stderr
    good = read_jsonl(out)
    assert [line["custom_id"] for line in good] == ["request-1", "request-2", "request-3"]
    assert all(len(line["response"]["body"]["data"][0]["embedding"]) == 8 for line in good)
    (bad,) = read_jsonl(errors)
    assert bad["custom_id"] == "request-4" and bad["response"]["status_code"] == 404
    for line in [*good, bad]:
        assert_batch_output_line(line)


def test_resume_after_kill_9_by_custom_id(simulator: SimulatorProcess, tmp_path: Path) -> None:
    simulator.configure(latency=0.05)
    source = write_lines(tmp_path / "batch.jsonl",
                         [chat(f"c{i}", max_tokens=4) for i in range(300)])
    out = tmp_path / "out.jsonl"
    args = ["run-batch", "-i", str(source), "-o", str(out), "--base-url", simulator.url,
            "--concurrency", "8", "--quiet"]
    process = subprocess.Popen(vbatch_cmd(*args))
    journal = tmp_path / "out.jsonl.journal.jsonl"
    deadline = time.monotonic() + 60
    while not journal.exists() or len(journal.read_bytes().splitlines()) < 40:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    recorded = len(journal.read_bytes().splitlines())
    simulator.reset()
    assert run_cli(*args).returncode == 0
    assert Counter(line["custom_id"] for line in read_jsonl(out)) == Counter(
        f"c{i}" for i in range(300))
    assert simulator.stats()["requests_seen"] <= 300 - recorded + 8


def test_vllms_example_batch_file(simulator: SimulatorProcess, tmp_path: Path) -> None:
    """vLLM's examples/features/openai_batch/openai_example_batch.jsonl, with our model."""
    example = "\n".join(json.dumps({
        "custom_id": f"request-{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": MODEL, "max_completion_tokens": 1000, "messages": [
            {"role": "system", "content": f"You are {kind} assistant."},
            {"role": "user", "content": "Hello world!"}]},
    }) for i, kind in ((1, "a helpful"), (2, "an unhelpful"))) + "\n"
    source = tmp_path / "openai_example_batch.jsonl"
    source.write_text(example)
    out = tmp_path / "results.jsonl"
    done = run_cli("run-batch", "-i", str(source), "-o", str(out), "--model", MODEL,
                   "--base-url", simulator.url)
    assert done.returncode == 0, done.stderr
    lines = read_jsonl(out)
    assert sorted(line["custom_id"] for line in lines) == ["request-1", "request-2"]
    for line in lines:
        assert_batch_output_line(line)
        assert line["error"] is None
    assert {body["max_completion_tokens"] for body in simulator.requests()} == {1000}


def test_chat_and_completions_lines_are_fitted_to_the_context(simulator: SimulatorProcess,
                                                              tmp_path: Path) -> None:
    """Each line with its own max_tokens (or max_completion_tokens), counted with the
    server's /tokenize: clamped lines are sent with the limit lowered, a prompt that cannot
    fit is an error line never sent, a pooling line is not counted; --on-overflow fail stops
    before sending."""
    simulator.configure(max_model_len=64)
    long_prompt = " ".join(["word"] * 100)
    lines = [chat("fits", max_tokens=8), chat("clamped-chat", max_tokens=1000),
             {"custom_id": "clamped-completion", "method": "POST", "url": "/v1/completions",
              "body": {"model": MODEL, "prompt": "The capital of France is",
                       "max_completion_tokens": 500}},
             {"custom_id": "too-long", "method": "POST", "url": "/v1/completions",
              "body": {"model": MODEL, "prompt": long_prompt, "max_tokens": 4}},
             EMBEDDING_BATCH[0]]
    source = write_lines(tmp_path / "batch.jsonl", lines)
    out = tmp_path / "results.jsonl"
    done = run_cli("run-batch", "-i", str(source), "-o", str(out), "--base-url", simulator.url)
    assert done.returncode == 0, done.stderr
    results = {line["custom_id"]: line for line in read_jsonl(out)}
    assert [results[c]["error"] is None for c in ("fits", "clamped-chat", "clamped-completion",
                                                   "request-1")] == [True] * 4
    assert "does not fit" in results["too-long"]["error"]["message"]
    assert results["too-long"]["response"]["body"] is None
    sent = simulator.requests()
    assert len(sent) == 4 and all(body.get("prompt") != long_prompt for body in sent)
    chats = sorted(body["max_tokens"] for body in sent if "messages" in body)
    (completion,) = (body for body in sent if "prompt" in body)
    assert chats[0] == 8 and 8 < chats[1] < 64
    assert 0 < completion["max_completion_tokens"] < 64 and "max_tokens" not in completion
    simulator.reset()
    refused = run_cli("run-batch", "-i", str(source), "-o", str(tmp_path / "fail.jsonl"),
                      "--base-url", simulator.url, "--on-overflow", "fail")
    assert refused.returncode == 2, refused.stderr
    assert "do not fit a context of 64 tokens with their own max_tokens" in refused.stderr
    assert "clamped-chat" in refused.stderr and "Traceback" not in refused.stderr
    assert simulator.stats()["requests_seen"] == 0
