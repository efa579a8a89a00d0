"""Programs against the real vLLM on the CPU (marker: vllm): a two-call program (an answer,
then a judge choosing a label) from the CLI with the managed server vbatch starts, and from
Python against the session's server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import vbatch

from .conftest import read_jsonl, run_cli, write_jsonl

pytestmark = pytest.mark.vllm

ANSWER_THEN_JUDGE = '''
async def answer_then_judge(row, llm):
    answer = await llm.chat(row["question"], max_tokens=24)
    verdict = await llm.chat(
        "Question: " + row["question"] + "\\nAnswer: " + answer.text
        + "\\nIs the answer correct?", choice=["correct", "wrong"], max_tokens=4)
    return {"answer": answer.text, "verdict": verdict.parsed}
'''
QUESTIONS = ["What is 2 + 2?", "What is the capital of France?", "Name a primary colour.",
             "What do bees make?"]


def check(records: list[dict[str, Any]]) -> None:
    assert len(records) == len(QUESTIONS)
    for record in records:
        assert record["status"] == "ok", record
        assert record["calls"] == 2 and record["result"]["answer"]
        assert record["result"]["verdict"] in ("correct", "wrong")
        assert record["usage"]["completion_tokens"] > 0


@pytest.mark.timeout(900)
def test_a_two_call_program_from_the_cli_with_a_managed_server(tmp_path: Path) -> None:
    program = tmp_path / "judge.py"
    program.write_text(ANSWER_THEN_JUDGE)
    source = write_jsonl(tmp_path / "in.jsonl", [{"question": q} for q in QUESTIONS])
    out = tmp_path / "out.jsonl"
    done = run_cli("run", str(source), "-o", str(out), "--program",
                   f"{program}:answer_then_judge", "--temperature", "0", "--max-model-len",
                   "512", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "calls: 8 (2.0 per row)" in done.stderr
    check(read_jsonl(out))


def test_a_two_call_program_from_python(vllm_url: str) -> None:
    namespace: dict[str, Any] = {}
    exec(ANSWER_THEN_JUDGE, namespace)
    program = namespace["answer_then_judge"]
    records = vbatch.generate([{"question": q} for q in QUESTIONS], base_url=vllm_url,
                              program=program, temperature=0, progress=False)
    check(records)
