"""Structured outputs against the real vLLM on the CPU (its wheel brings xgrammar), the
session's server (``vllm_url``, context 512) and the embedded default model (marker: vllm)."""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Literal

import jsonschema_rs
import pandas as pd
import pyarrow.parquet as pq
import pydantic
import pytest

import vbatch

from .conftest import read_jsonl, run_cli, vbatch_cmd, write_jsonl
from .vllm_helpers import wait_for_lines

pytestmark = pytest.mark.vllm

PEOPLE = ["Alice is 31 and loves chess and tea.", "Bob, 45, a grumpy baker who hates rain.",
          "Chen is a cheerful 22-year-old student of music.",
          "Dana (60) is calm and grows roses.", "Eli is 9, sad, and collects stamps."]
EXTRACTION = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12},
                   "age": {"type": "integer", "minimum": 0, "maximum": 120},
                   "mood": {"enum": ["happy", "sad", "neutral"]},
                   "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 12},
                               "maxItems": 2}},
    "required": ["name", "age", "mood"],
    "additionalProperties": False,
}


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=12)
    age: int = pydantic.Field(ge=0, le=120)
    mood: Literal["happy", "sad", "neutral"]


def people(tmp_path: Path, count: int) -> Path:
    rows = [{"id": f"p{i}", "prompt": "Extract the person as JSON: " + PEOPLE[i % len(PEOPLE)]
             + f" (record {i})"} for i in range(count)]
    return write_jsonl(tmp_path / "people.jsonl", rows)


def run_ok(*args: str) -> None:
    done = run_cli(*args, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_an_extraction_schema_over_100_prompts(vllm_url: str, tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(EXTRACTION))
    out = tmp_path / "out.jsonl"
    done = run_cli("run", str(people(tmp_path, 100)), "-o", str(out), "--base-url", vllm_url,
                   "--json-schema", str(schema), "--max-tokens", "96", "--temperature", "0.7",
                   "--seed", "1", "--concurrency", "16", timeout=900)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert "structured outputs: sent as response_format / structured_outputs (vLLM 0.32" in \
        done.stderr
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == sorted(f"p{i}" for i in range(100))
    validator = jsonschema_rs.validator_for(EXTRACTION)
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) >= 90
    for record in ok:
        assert validator.is_valid(record["parsed"]), record
        assert json.loads(record["text"]) == record["parsed"]
    for record in records:
        if record["status"] == "failed":
            assert record["error"]["type"] == "invalid_output", record


def test_a_regex_a_choice_and_any_json(vllm_url: str, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "a", "prompt": "The moon landing happened on"},
        {"id": "b", "prompt": "Today's date is"}])
    date = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    run_ok("run", str(source), "-o", str(tmp_path / "dates.jsonl"), "--base-url", vllm_url,
           "--endpoint", "completions", "--regex", date, "--max-tokens", "16")
    for record in read_jsonl(tmp_path / "dates.jsonl"):
        assert record["status"] == "ok" and len(record["parsed"]) == 10, record
        assert record["parsed"][4] == "-" == record["parsed"][7]
    labels = write_jsonl(tmp_path / "labels.jsonl", [
        {"prompt": "Is this review positive or negative? 'I loved it!'"},
        {"prompt": "Is this review positive or negative? 'Awful, broken.'"}])
    run_ok("run", str(labels), "-o", str(tmp_path / "labels_out.jsonl"), "--base-url",
           vllm_url, "--choice", "positive", "--choice", "negative", "--max-tokens", "8")
    assert {r["parsed"] for r in read_jsonl(tmp_path / "labels_out.jsonl")} <= {"positive",
                                                                                 "negative"}
    run_ok("run", str(labels), "-o", str(tmp_path / "json.jsonl"), "--base-url", vllm_url,
           "--json", "--max-tokens", "64", "--temperature", "0.5", "--seed", "3",
           "--max-invalid-retries", "4")
    for record in read_jsonl(tmp_path / "json.jsonl"):
        assert record["status"] == "ok" and isinstance(record["parsed"], dict), record


def test_too_few_tokens_for_the_schema_is_invalid_output_with_the_hint(
        vllm_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    done = run_cli("run", str(people(tmp_path, 3)), "-o", str(out), "--base-url", vllm_url,
                   "--json-schema", json.dumps(EXTRACTION), "--max-tokens", "4")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "invalid answers: 9 (length 9)" in done.stderr
    for record in read_jsonl(out):
        assert record["status"] == "failed" and record["attempts"] == 3
        assert record["error"]["type"] == "invalid_output"
        assert record["error"]["message"] == ("finish_reason length after 4 tokens: the answer "
                                              "was cut before it was complete; raise "
                                              "--max-tokens")
        assert record["text"] and record["finish_reason"] == "length"


def test_a_grammar_the_server_cannot_compile_is_refused_before_the_run(
        vllm_url: str, tmp_path: Path) -> None:
    done = run_cli("run", str(people(tmp_path, 3)), "-o", str(tmp_path / "out.jsonl"),
                   "--base-url", vllm_url, "--grammar", 'root ::= "yes" | (')
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        "vbatch: error: --grammar: the server cannot use it:")


def test_a_dataframe_gets_typed_columns_and_parquet_keeps_the_types(
        vllm_url: str, tmp_path: Path) -> None:
    frame = pd.DataFrame({"prompt": ["Extract the person as JSON: " + p for p in PEOPLE[:4]],
                          "name": ["a", "b", "c", "d"]})
    out = vbatch.generate(frame, base_url=vllm_url, response_format=Person, max_tokens=64,
                          temperature=0.7, seed=2, progress=False,
                          output=tmp_path / "people.parquet")
    assert (out["status"] == "ok").all(), out[["status", "error"]]
    assert str(out["age"].dtype) == "int64" and str(out["mood"].dtype) == "category"
    assert list(out["name"]) == ["a", "b", "c", "d"] and "name_result" in out.columns
    schema = pq.read_schema(tmp_path / "people.parquet")
    assert str(schema.field("age").type) == "int64"
    assert str(schema.field("name").type) == "string"
    models = vbatch.generate(list(frame["prompt"]), base_url=vllm_url, response_format=Person,
                             max_tokens=64, temperature=0.7, seed=2, progress=False,
                             as_models=True)
    assert all(isinstance(r["parsed"], Person) for r in models)


def test_kill_9_and_resume_keep_parsed(vllm_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    args = ["run", str(people(tmp_path, 60)), "-o", str(out), "--base-url", vllm_url,
            "--json-schema", json.dumps(EXTRACTION), "--max-tokens", "96", "--concurrency", "8",
            "--quiet"]
    process = subprocess.Popen(vbatch_cmd(*args))
    before = wait_for_lines(out, 10, timeout=300)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 10 <= before < 60
    done = run_cli(*args, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    records = read_jsonl(out)
    assert max(Counter(r["id"] for r in records).values()) == 1 and len(records) == 60
    validator = jsonschema_rs.validator_for(EXTRACTION)
    for record in records:
        assert (validator.is_valid(record["parsed"]) if record["status"] == "ok"
                else record["error"]["type"] == "invalid_output"), record
