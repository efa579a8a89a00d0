"""Against a real vLLM server on the CPU with the embedded default model (marker: vllm).

One ``vbatch serve`` process (the ``vllm_url`` fixture, ``--max-model-len 512``) serves the
whole test session; the managed-server tests start their own.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from vbatch import RunConfig, run
from vbatch.engine.concurrency import RUNNING_WINDOW_MAX_S
from vbatch.prepare.tokens import LocalTokenCounter

from .conftest import read_jsonl, run_cli, vbatch_cmd, write_jsonl
from .vllm_helpers import (
    api_servers_below,
    descendants,
    wait_for_lines,
    wait_gone,
)

pytestmark = pytest.mark.vllm

QUESTIONS = [
    "What is the capital of France?", "Name three colours.", "Why is the sea salty?",
    "Write a haiku about rain.", "What is 12 times 12?", "Give a synonym for happy.",
    "What do bees make?", "Explain gravity in one sentence.",
]


def prompts(tmp_path: Path, count: int, name: str = "in.jsonl") -> Path:
    rows = [{"id": f"q{i}", "prompt": QUESTIONS[i % len(QUESTIONS)] + f" (#{i})"}
            for i in range(count)]
    return write_jsonl(tmp_path / name, rows)


def run_ok(*args: str) -> None:
    result = run_cli(*args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_chat_and_completions(vllm_url: str, tmp_path: Path) -> None:
    source = prompts(tmp_path, 6)
    for endpoint in ("chat", "completions"):
        out = tmp_path / f"{endpoint}.jsonl"
        run_ok("run", str(source), "-o", str(out), "--base-url", vllm_url, "--endpoint",
               endpoint, "--max-tokens", "12", "--temperature", "0")
        records = read_jsonl(out)
        assert sorted(r["id"] for r in records) == [f"q{i}" for i in range(6)]
        assert any(record["text"].strip() for record in records)
        for record in records:
            assert record["status"] == "ok" and isinstance(record["text"], str)
            assert record["usage"]["prompt_tokens"] > 0
            assert 0 < record["usage"]["completion_tokens"] <= 12
            assert record["finish_reason"] in ("stop", "length")


def test_n_greater_than_one(vllm_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    run_ok("run", str(prompts(tmp_path, 2)), "-o", str(out), "--base-url", vllm_url,
           "--n", "3", "--temperature", "0.9", "--max-tokens", "8")
    for record in read_jsonl(out):
        assert isinstance(record["text"], list) and len(record["text"]) == 3
        assert len(record["finish_reason"]) == 3


def test_stop_sequence_cuts_the_text(vllm_url: str, tmp_path: Path) -> None:
    row = {"id": "a", "prompt": "List the days of the week:"}
    source = write_jsonl(tmp_path / "in.jsonl", [row])
    free = tmp_path / "free.jsonl"
    common = ["--base-url", vllm_url, "--endpoint", "completions", "--temperature", "0",
              "--max-tokens", "24"]
    run_ok("run", str(source), "-o", str(free), *common)
    text = read_jsonl(free)[0]["text"]
    words = text.split()
    assert len(words) >= 4, text
    stop = words[3]
    stopped = tmp_path / "stopped.jsonl"
    run_ok("run", str(source), "-o", str(stopped), *common, "--stop", stop)
    record = read_jsonl(stopped)[0]
    assert record["finish_reason"] == "stop"
    assert stop not in record["text"]
    assert text.startswith(record["text"])


def test_seed_gives_the_same_text_twice(vllm_url: str, tmp_path: Path) -> None:
    source = prompts(tmp_path, 1)
    texts = []
    for attempt in range(2):
        out = tmp_path / f"seed{attempt}.jsonl"
        run_ok("run", str(source), "-o", str(out), "--base-url", vllm_url, "--temperature",
               "1.0", "--seed", "1234", "--max-tokens", "24")
        texts.append(read_jsonl(out)[0]["text"])
    assert texts[0] == texts[1]


def test_logprobs_pass_through(vllm_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    run_ok("run", str(prompts(tmp_path, 1)), "-o", str(out), "--base-url", vllm_url,
           "--max-tokens", "5", "--extra-body", '{"logprobs": true, "top_logprobs": 2}')
    record = read_jsonl(out)[0]
    content = record["logprobs"]["content"]
    assert len(content) == record["usage"]["completion_tokens"]
    assert all(len(token["top_logprobs"]) == 2 for token in content)


def test_structured_output_is_valid_json(vllm_url: str, tmp_path: Path) -> None:
    schema = {"type": "object",
              "properties": {"answer": {"type": "string", "enum": ["yes", "no"]},
                             "sure": {"type": "boolean"}},
              "required": ["answer", "sure"], "additionalProperties": False}
    body = {"response_format": {"type": "json_schema",
                                "json_schema": {"name": "verdict", "schema": schema}}}
    out = tmp_path / "out.jsonl"
    run_ok("run", str(prompts(tmp_path, 4)), "-o", str(out), "--base-url", vllm_url,
           "--max-tokens", "40", "--temperature", "0", "--extra-body", json.dumps(body))
    for record in read_jsonl(out):
        parsed = json.loads(record["text"])
        assert parsed["answer"] in ("yes", "no") and isinstance(parsed["sure"], bool)


def test_few_hundred_rows_resume_after_sigkill(vllm_url: str, tmp_path: Path) -> None:
    source = prompts(tmp_path, 200)
    out = tmp_path / "out.jsonl"
    args = ["run", str(source), "-o", str(out), "--base-url", vllm_url, "--max-tokens", "8",
            "--concurrency", "32", "--quiet"]
    process = subprocess.Popen(vbatch_cmd(*args))
    done_before_kill = wait_for_lines(out, 40, timeout=300)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 40 <= done_before_kill < 200
    run_ok(*args)
    counts = Counter(r["id"] for r in read_jsonl(out))
    assert set(counts) == {f"q{i}" for i in range(200)}
    assert max(counts.values()) == 1
    assert {r["status"] for r in read_jsonl(out)} == {"ok"}


@pytest.mark.timeout(900)
def test_managed_server_killed_mid_run_is_restarted(tmp_path: Path) -> None:
    source = prompts(tmp_path, 40)
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        vbatch_cmd("run", str(source), "-o", str(out), "--max-tokens", "32", "--concurrency",
                   "4", "--max-model-len", "512"),
        stderr=subprocess.PIPE, text=True,
    )
    assert wait_for_lines(out, 4, timeout=600) >= 4
    servers = api_servers_below(process.pid)
    assert len(servers) == 1
    servers[0].kill()
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert "restarting it (1/3)" in stderr
    records = read_jsonl(out)
    assert Counter(r["id"] for r in records) == Counter(f"q{i}" for i in range(40))
    assert {r["status"] for r in records} == {"ok"}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_orphan_server_after_stop(tmp_path: Path, how: signal.Signals) -> None:
    source = prompts(tmp_path, 100)
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        vbatch_cmd("run", str(source), "-o", str(out), "--max-tokens", "32", "--quiet",
                   "--concurrency", "4", "--max-model-len", "512"),
    )
    assert wait_for_lines(out, 2, timeout=600) >= 2
    family = descendants(process.pid)
    assert api_servers_below(process.pid)
    started = time.monotonic()
    process.send_signal(how)
    code = process.wait(timeout=120)
    assert code == {signal.SIGINT: 130, signal.SIGTERM: 130, signal.SIGKILL: -9}[how]
    assert wait_gone(family, timeout=60) == []
    assert time.monotonic() - started < 60


def test_bad_model_path_fails_before_starting(tmp_path: Path) -> None:
    source = prompts(tmp_path, 1)
    result = run_cli("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--model",
                     str(tmp_path / "no-such-model"), timeout=600)
    assert result.returncode == 2
    assert "no-such-model" in result.stderr
    assert "Hint: the model path or name looks wrong" in result.stderr


def api_server_pids() -> set[int]:
    return {p.pid for p in psutil.process_iter(["cmdline"])
            if "vllm.entrypoints.openai.api_server" in " ".join(p.info["cmdline"] or [])}


def test_known_context_starts_the_server_while_checking(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    before = api_server_pids()
    server_up_when_counting: list[bool] = []
    exact_count = LocalTokenCounter.count

    def count(self: LocalTokenCounter, contents: list[dict[str, Any]]) -> list[int]:
        deadline = time.monotonic() + 60
        while not api_server_pids() - before and time.monotonic() < deadline:
            time.sleep(0.2)
        server_up_when_counting.append(bool(api_server_pids() - before))
        return exact_count(self, contents)

    monkeypatch.setattr(LocalTokenCounter, "count", count)
    good = prompts(tmp_path, 20)
    long_row = {"id": "long", "prompt": "Summarise: " + "the cat sat on the mat. " * 360}
    with open(good, "a") as handle:
        handle.write(json.dumps(long_row) + "\n")
    # No --max-model-len: on the CPU the server starts with the model's own context (8192),
    # which its KV space holds, instead of after every prompt was counted.
    said = io.StringIO()
    result = run(RunConfig(input=good, output=tmp_path / "out.jsonl", max_tokens=4),
                 stream=said)
    assert (result.stats.ok, result.stats.failed) == (21, 0)
    assert "--max-model-len 8192: the model's own" in said.getvalue()
    # Only the long row's byte length (8,651) leaves its fit in doubt: it alone is counted,
    # and by then the server is starting.
    assert server_up_when_counting == [True]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + '{"id": "q0", "prompt": "again"}\n')
    result = run_cli("run", str(bad), "-o", str(tmp_path / "bad-out.jsonl"), "--max-model-len",
                     "1024", timeout=600)
    assert result.returncode == 2 and "duplicate id 'q0'" in result.stderr
    assert "starting vLLM" in result.stderr
    assert api_server_pids() <= before


def test_serve_without_model_passes_the_arguments_after_the_dashes(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "0", "--log", str(tmp_path / "serve.log"), "--",
                     "--no-such-vllm-flag", timeout=600)
    assert result.returncode == 3
    assert "starting vLLM with --no-such-vllm-flag" not in result.stderr
    assert "SmolLM2-135M-Instruct" in result.stderr
    assert "Hint: vllm serve rejected an argument" in result.stderr


def test_server_failing_to_start_shows_its_log_and_a_hint(tmp_path: Path) -> None:
    source = prompts(tmp_path, 1)
    result = run_cli("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--",
                     "--no-such-vllm-flag", timeout=600)
    assert result.returncode == 3
    assert "Hint: vllm serve rejected an argument" in result.stderr
    assert "Last lines of" in result.stderr and "no-such-vllm-flag" in result.stderr
    assert not list(tmp_path.glob("out.jsonl"))


def test_adaptive_concurrency_follows_the_real_server(vllm_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    stats = tmp_path / "stats.json"
    run_ok("run", str(prompts(tmp_path, 300)), "-o", str(out), "--base-url", vllm_url,
           "--max-tokens", "16", "--stats-json", str(stats), "--quiet")
    trace = json.loads(stats.read_text())["concurrency_trace"]
    assert trace, "the controller read the server's /metrics"
    assert max(sample["running"] for sample in trace) > 0
    assert max(sample["limit"] for sample in trace) < 1024
    # 300 rows at the starting bound of 256 queue behind the server's 128 sequences.
    queued = [s for s in trace if s["waiting"] > 0]
    assert queued, "no sample saw requests waiting at the server"
    for sample in queued:
        lately = max(s["running"] for s in trace
                     if sample["t"] - RUNNING_WINDOW_MAX_S - 0.01 <= s["t"] <= sample["t"])
        assert sample["limit"] <= lately + max(4, -(-lately // 10))
    assert len(read_jsonl(out)) == 300


@pytest.mark.timeout(900)
def test_two_managed_replicas_share_the_work(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    stats = tmp_path / "stats.json"
    run_ok("run", str(prompts(tmp_path, 24)), "-o", str(out), "--replicas", "2",
           "--max-tokens", "8", "--max-model-len", "512", "--stats-json", str(stats))
    endpoints = json.loads(stats.read_text())["endpoints"]
    assert len(endpoints) == 2
    assert all(endpoint["requests"] > 0 for endpoint in endpoints)
    assert Counter(r["id"] for r in read_jsonl(out)) == Counter(f"q{i}" for i in range(24))
    assert (tmp_path / "out.jsonl.server.0.log").exists()
    assert (tmp_path / "out.jsonl.server.1.log").exists()
