"""`vbatch run-batch` against the real CPU server: vLLM's own input batch, every output line
validated by vLLM's own schema, and the drop-in command line that starts the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vbatch.servers.default_model import DEFAULT_MODEL_NAME

from .conftest import read_jsonl, run_cli

pytestmark = pytest.mark.vllm

# vLLM's run-batch has no /v1/completions, so its schema has no completions body: the lines
# of those requests are checked against the OpenAI schema by hand.
VALIDATE = """
import json, sys
from vllm.entrypoints.launchers.run_batch import BatchRequestOutput
for line in open(sys.argv[1]):
    if json.loads(line)["custom_id"] not in sys.argv[2:]:
        BatchRequestOutput.model_validate_json(line)
print("valid")
"""


def batch(model: str) -> list[dict[str, Any]]:
    def chat(custom_id: str, model: str = model, url: str = "/v1/chat/completions",
             **extra: Any) -> dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": url,
                "body": {"model": model, "max_tokens": 8, **extra,
                         "messages": [{"role": "system", "content": "You are helpful."},
                                      {"role": "user", "content": "Hello world!"}]}}

    completion = {"custom_id": "request-6", "method": "POST", "url": "/v1/completions",
                  "body": {"model": model, "prompt": "The capital of France is",
                           "max_tokens": 5}}
    return [chat("request-1"), chat("request-2"), chat("request-3", model="NonExistModel"),
            chat("request-4", url="/bad_url"), chat("request-5", stream="True"), completion]


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def validated(path: Path, *completions: str) -> list[dict[str, Any]]:
    check = subprocess.run([sys.executable, "-c", VALIDATE, str(path), *completions],
                           capture_output=True, text=True, timeout=300)
    assert check.stdout.strip() == "valid", check.stderr[-2000:]
    lines = read_jsonl(path)
    for line in lines:
        if line["custom_id"] in completions:
            assert set(line) == {"id", "custom_id", "response", "error"}
            assert line["response"]["body"]["object"] == "text_completion"
    return lines


def test_vllms_input_batch_against_the_running_server(vllm_url: str, tmp_path: Path) -> None:
    """vLLM's batch, and two lines that do not fit the context of 512 as they are: one asks
    100,000 tokens (clamped to fit, answered), one's prompt alone is too long (an error line)."""
    overflowing = batch(DEFAULT_MODEL_NAME)[0]
    overflowing = {**overflowing, "custom_id": "request-7",
                   "body": {**overflowing["body"], "max_tokens": 100_000}}
    too_long = {"custom_id": "request-8", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": DEFAULT_MODEL_NAME, "max_tokens": 4,
                         "messages": [{"role": "user", "content": "word " * 600}]}}
    source = write(tmp_path / "batch.jsonl", [*batch(DEFAULT_MODEL_NAME), overflowing, too_long])
    out = tmp_path / "results.jsonl"
    done = run_cli("run-batch", "-i", str(source), "-o", str(out), "--base-url", vllm_url,
                   "--retry-delay", "0.01", timeout=300)
    assert done.returncode == 0, done.stderr
    lines = {line["custom_id"]: line for line in validated(out, "request-6")}
    assert [lines[f"request-{i}"]["error"] is None for i in range(1, 9)] == [
        True, True, False, False, False, True, True, False]
    assert lines["request-3"]["response"]["status_code"] == 404
    assert lines["request-6"]["response"]["body"]["choices"][0]["text"]
    usage = lines["request-7"]["response"]["body"]["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= 512
    assert "does not fit" in lines["request-8"]["error"]["message"]


def test_the_drop_in_command_line_starts_the_server(tmp_path: Path) -> None:
    source = write(tmp_path / "batch.jsonl", batch(DEFAULT_MODEL_NAME)[:2])
    out = tmp_path / "results.jsonl"
    done = run_cli("run-batch", "-i", str(source), "-o", str(out), "--max-model-len", "512",
                   "--enable-prefix-caching", timeout=900)
    assert done.returncode == 0, done.stderr
    assert [line["error"] for line in validated(out)] == [None, None]
    # The server's log is OUTPUT.server.log, as for every output format.
    log = (tmp_path / "results.jsonl.server.log").read_text()
    assert not (tmp_path / "results.jsonl.journal.jsonl.server.log").exists()
    # vLLM's own lines, not vbatch's echo of the command it started.
    served = [line for line in log.splitlines() if not line.startswith("=== vbatch:")]
    assert any("enable_prefix_caching" in line for line in served), log[-2000:]
