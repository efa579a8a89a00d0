"""Structured outputs: what checking every answer costs, and what a schema costs the engine.

    python benchmarks/structured.py [--requests N] [--engine] [--rows N]

1. Validators: µs per answer of each candidate installed (jsonschema, fastjsonschema,
   jsonschema-rs) on a five-field extraction answer, and of vbatch's whole check
   (``check_answer``: parse, validate, ``parsed``).
2. Client CPU per request against a zero-latency simulator on the other core: vbatch without a
   schema, vbatch with ``--json-schema`` (every answer checked), and the AsyncOpenAI +
   Semaphore script (``baseline_openai.py``, no check), same rows, in one run.
3. With ``--engine`` (the real CPU vLLM and the default model): the same ``--rows`` extraction
   prompts through a running server with and without the schema, and vLLM offline
   ``LLM.chat`` with the schema as ``StructuredOutputsParams`` (the engine's ceiling).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import PYTHON, ROOT, Simulator, baseline_command, machine, measure, vbatch_command

WORK = ROOT / "bench-results"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12},
                   "age": {"type": "integer", "minimum": 0, "maximum": 120},
                   "mood": {"enum": ["happy", "sad", "neutral"]},
                   "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 12},
                               "maxItems": 2}},
    "required": ["name", "age", "mood"], "additionalProperties": False}
ANSWER = '{"name": "Alice", "age": 31, "mood": "happy", "hobbies": ["chess", "tea"]}'
PEOPLE = ["Alice is 31 and loves chess and tea.", "Bob, 45, a grumpy baker who hates rain.",
          "Chen is a cheerful 22-year-old student of music.",
          "Dana (60) is calm and grows roses.", "Eli is 9, sad, and collects stamps."]


def per_call_us(call: Any, count: int = 20_000) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(count):
            call()
        best = min(best, (time.perf_counter() - started) / count * 1e6)
    return best


def validators() -> list[tuple[str, float]]:
    import orjson

    from vbatch.structured.answers import AnswerRules, check_answer
    from vbatch.structured.specs import JsonSchema

    found: list[tuple[str, float]] = [("orjson.loads alone", per_call_us(
        lambda: orjson.loads(ANSWER)))]
    try:
        import jsonschema

        checker = jsonschema.Draft202012Validator(SCHEMA)
        found.append(("jsonschema", per_call_us(lambda: checker.is_valid(orjson.loads(ANSWER)),
                                                2000)))
    except ImportError:
        pass
    try:
        import fastjsonschema

        compiled = fastjsonschema.compile(SCHEMA)
        found.append(("fastjsonschema", per_call_us(lambda: compiled(orjson.loads(ANSWER)))))
    except ImportError:
        pass
    import jsonschema_rs

    fast = jsonschema_rs.validator_for(SCHEMA)
    found.append(("jsonschema-rs", per_call_us(lambda: fast.is_valid(orjson.loads(ANSWER)))))
    spec, rules = JsonSchema(SCHEMA), AnswerRules()
    found.append(("vbatch check_answer", per_call_us(lambda: check_answer(
        {"text": ANSWER, "finish_reason": "stop", "usage": {}}, spec, rules, 64))))
    return found


def client_cost(requests: int, rounds: int) -> dict[str, float]:
    source = WORK / f"people-{requests}.jsonl"
    write_people(source, requests)
    schema = WORK / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    cpu: dict[str, list[float]] = {}
    with Simulator("--completion-tokens", "8") as sim:
        for _ in range(rounds):
            commands = {
                "vbatch, no schema": lambda: vbatch_command(source, WORK / "plain.out", sim.url,
                                                            "--concurrency", "256"),
                "vbatch --json-schema": lambda: vbatch_command(
                    source, WORK / "schema.out", sim.url, "--concurrency", "256",
                    "--json-schema", str(schema), "--max-tokens", "64"),
                "AsyncOpenAI + Semaphore script": lambda: baseline_command(
                    source, WORK / "b.out", sim.url)}
            for name, command in commands.items():
                cpu.setdefault(name, []).append(measure(command()).cpu_s / requests * 1000)
    return {name: statistics.median(values) for name, values in cpu.items()}


def write_people(path: Path, count: int) -> Path:
    with open(path, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({"id": f"p{i}", "prompt": "Extract the person as JSON: "
                                     + PEOPLE[i % len(PEOPLE)] + f" (record {i})"}) + "\n")
    return path


def engine(rows: int, max_tokens: int) -> dict[str, float]:
    """Rows per second: vbatch over HTTP with and without the schema, vLLM offline with it."""
    from tests.vllm_helpers import ServeProcess

    source = write_people(WORK / f"people-{rows}.jsonl", rows)
    rates: dict[str, float] = {}
    server = ServeProcess(WORK / "serve.log", "--max-model-len", "512")
    try:
        for name, extra in (("vbatch over HTTP, no schema", []),
                            ("vbatch over HTTP, --json-schema",
                             ["--json-schema", json.dumps(SCHEMA)])):
            out = WORK / "engine.out"
            for stale in (out, out.with_name(out.name + ".manifest.json")):
                stale.unlink(missing_ok=True)
            started = time.perf_counter()
            subprocess.run([PYTHON, "-m", "vbatch", "run", str(source), "-o", str(out),
                            "--base-url", server.url, "--quiet", "--max-tokens",
                            str(max_tokens), "--temperature", "0", *extra], check=False)
            rates[name] = rows / (time.perf_counter() - started)
    finally:
        server.stop()
    from engine import engine_env

    done = subprocess.run([PYTHON, "-c", OFFLINE, str(source), json.dumps(SCHEMA),
                           str(max_tokens)], capture_output=True, text=True, env=engine_env())
    if done.returncode != 0:
        raise RuntimeError(f"vLLM offline failed: {done.stderr[-3000:]}")
    rates["vLLM offline LLM.chat, schema"] = rows / float(done.stdout.strip().splitlines()[-1])
    return rates


OFFLINE = """
import json, sys, time
from vllm import LLM, SamplingParams
from vllm.sampling_params import StructuredOutputsParams
from vbatch.servers.default_model import prepare_default_model
prompts = [json.loads(line)["prompt"] for line in open(sys.argv[1])]
llm = LLM(model=str(prepare_default_model()), max_model_len=512, enforce_eager=True,
          max_num_seqs=128, max_num_batched_tokens=4096)
params = SamplingParams(max_tokens=int(sys.argv[3]), temperature=0,
                        structured_outputs=StructuredOutputsParams(json=json.loads(sys.argv[2])))
started = time.perf_counter()
llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=False)
print(time.perf_counter() - started)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine", action="store_true")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    print(machine(), flush=True)
    print("\n| validator | µs per answer |\n|---|---|")
    for name, micros in validators():
        print(f"| {name} | {micros:.2f} |")
    costs = client_cost(args.requests, args.rounds)
    base = costs["AsyncOpenAI + Semaphore script"]
    print(f"\n| client ({args.requests} requests, median of {args.rounds}) | ms CPU per request "
          "| vs the script |\n|---|---|---|")
    for name, ms in costs.items():
        print(f"| {name} | {ms:.3f} | {ms / base:.3f} |")
    if args.engine:
        rates = engine(args.rows, args.max_tokens)
        ceiling = rates["vLLM offline LLM.chat, schema"]
        print(f"\n| engine ({args.rows} rows, max_tokens {args.max_tokens}) | rows/s | vs "
              "offline with the schema |\n|---|---|---|")
        for name, rate in rates.items():
            print(f"| {name} | {rate:.2f} | {rate / ceiling:.3f} |")


if __name__ == "__main__":
    main()
