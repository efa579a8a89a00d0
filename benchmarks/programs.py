"""Programs on the real CPU engine: a draft → judge chain over the benchmark prompts, as one
``--program`` run, as two consecutive vbatch runs (stage by stage), and as the hand-written
AsyncOpenAI + Semaphore script for two steps (``baseline_openai.py ... judge``), against one server
(``vbatch serve``, the default model, its prefix cache off so that no variant finds the
prompts of the one before cached), wall time and the server's idle time (sampled from
``/metrics``: no request running) while each ran.

    python benchmarks/programs.py [--prompts FILE] [--rows N] [--max-tokens N] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baseline_openai import judge_prompt
from harness import PYTHON, ROOT, machine

WORK = ROOT / "bench-results"
PROGRAM = '''
async def draft_judge(row, llm):
    draft = await llm.chat(row["prompt"], max_tokens={max_tokens})
    verdict = await llm.chat(judge(row, draft.text or ""), choice=["correct", "wrong"],
                             max_tokens=4)
    return {{"answer": draft.text, "verdict": verdict.parsed}}


def judge(row, answer):
    return f"Question: {{row['prompt']}}\\nAnswer: {{answer}}\\nIs the answer correct?"
'''
_RUNNING = re.compile(r"^vllm:num_requests_running\{[^}]*\} ([0-9.e+]+)$", re.M)


class IdleMeter:
    """Samples the server's running requests every 0.1 s; ``idle_s``: time with none."""

    def __init__(self, root: str):
        self.root = root
        self.idle_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> IdleMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(0.1):
            now = time.perf_counter()
            try:
                with urllib.request.urlopen(self.root + "/metrics", timeout=2) as answer:
                    text = answer.read().decode()
                running = sum(float(v) for v in _RUNNING.findall(text))
            except OSError:
                running = 1.0
            if running == 0:
                self.idle_s += now - last
            last = now


def vbatch_run(*args: str) -> None:
    done = subprocess.run([PYTHON, "-m", "vbatch", "run", *args, "--quiet"],
                          capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(done.stderr[-3000:])


def fresh(path: Path) -> Path:
    for stale in (path, path.with_name(path.name + ".manifest.json"),
                  path.with_name(path.name + ".calls.jsonl")):
        stale.unlink(missing_ok=True)
    return path


def as_program(source: Path, url: str, max_tokens: int) -> None:
    program = WORK / "draft_judge.py"
    program.write_text(PROGRAM.format(max_tokens=max_tokens))
    vbatch_run(str(source), "-o", str(fresh(WORK / "program.jsonl")), "--base-url", url,
               "--program", f"{program}:draft_judge", "--temperature", "0")


def stage_by_stage(source: Path, url: str, max_tokens: int) -> None:
    drafts = fresh(WORK / "drafts.jsonl")
    vbatch_run(str(source), "-o", str(drafts), "--base-url", url, "--max-tokens",
               str(max_tokens), "--temperature", "0", "--keep", "prompt")
    judged = WORK / "judge-input.jsonl"
    with open(drafts) as handle, open(judged, "w") as target:
        for line in handle:
            record = json.loads(line)
            target.write(json.dumps({"id": record["id"], "prompt": judge_prompt(
                record, record.get("text") or "")}) + "\n")
    vbatch_run(str(judged), "-o", str(fresh(WORK / "verdicts.jsonl")), "--base-url", url,
               "--choice", "correct", "--choice", "wrong", "--max-tokens", "4",
               "--temperature", "0")


def script(source: Path, url: str, max_tokens: int, model: str) -> None:
    subprocess.run([PYTHON, str(ROOT / "benchmarks" / "baseline_openai.py"), str(source),
                    str(WORK / "script.jsonl"), url, model, str(max_tokens), "judge"],
                   check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=Path, default=ROOT / "benchmarks" / "prompts_300.jsonl")
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    print(machine(), flush=True)
    source = WORK / "chain-prompts.jsonl"
    with open(args.prompts) as handle, open(source, "w") as target:
        for i, line in enumerate(handle):
            if i == args.rows:
                break
            row = json.loads(line)
            target.write(json.dumps({"id": row.get("id", f"p{i}"), "prompt": row["prompt"]})
                         + "\n")
    from tests.vllm_helpers import ServeProcess

    # Without the prefix cache: at temperature 0 every variant sends the same prompts, and a
    # variant run after another would find them cached.
    server = ServeProcess(WORK / "chain-serve.log", "--max-model-len", "2048", "--",
                          "--no-enable-prefix-caching")
    model = json.loads(urllib.request.urlopen(server.url + "/models").read())["data"][0]["id"]
    root = server.url.removesuffix("/v1")
    runs: dict[str, list[tuple[float, float]]] = {}
    variants: dict[str, Any] = {
        "one --program run": lambda: as_program(source, server.url, args.max_tokens),
        "two vbatch runs, stage by stage": lambda: stage_by_stage(source, server.url,
                                                                  args.max_tokens),
        "AsyncOpenAI + Semaphore, two steps": lambda: script(source, server.url,
                                                             args.max_tokens, model)}
    try:
        for _ in range(args.rounds):
            for name, variant in variants.items():
                with IdleMeter(root) as meter:
                    started = time.perf_counter()
                    variant()
                    wall = time.perf_counter() - started
                runs.setdefault(name, []).append((wall, meter.idle_s))
    finally:
        server.stop()
    base = statistics.median(w for w, _ in runs["one --program run"])
    print(f"\n| draft → judge, {args.rows} prompts, max_tokens {args.max_tokens} (median of "
          f"{args.rounds}) | wall s | server idle s | program's speed-up |\n|---|---|---|---|")
    for name, samples in runs.items():
        wall = statistics.median(w for w, _ in samples)
        idle = statistics.median(i for _, i in samples)
        print(f"| {name} | {wall:.1f} | {idle:.1f} | {wall / base:.2f}x |")


if __name__ == "__main__":
    main()
