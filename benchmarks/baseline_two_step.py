"""The reference pattern for a two-step chain (draft, then judge), as users write it today:
``openai.AsyncOpenAI``, every row a task at once under ``asyncio.Semaphore(500)``, each row's
steps one after the other, ``asyncio.gather``, results written at the end.

    python benchmarks/baseline_two_step.py INPUT OUTPUT BASE_URL MODEL MAX_TOKENS
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from openai import AsyncOpenAI


async def main(source: str, target: str, base_url: str, model: str, max_tokens: int) -> None:
    client = AsyncOpenAI(base_url=base_url, api_key="EMPTY")
    semaphore = asyncio.Semaphore(500)
    with open(source) as handle:
        rows = [json.loads(line) for line in handle]

    async def one(row: dict[str, Any]) -> dict[str, Any]:
        async with semaphore:
            draft = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": row["prompt"]}],
                max_tokens=max_tokens, temperature=0)
            text = draft.choices[0].message.content or ""
            verdict = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": judge_prompt(row, text)}],
                max_tokens=4, temperature=0,
                extra_body={"structured_outputs": {"choice": ["correct", "wrong"]}})
        return {"answer": text, "verdict": verdict.choices[0].message.content}

    results = await asyncio.gather(*(one(row) for row in rows))
    with open(target, "w") as handle:
        for result in results:
            handle.write(json.dumps(result) + "\n")


def judge_prompt(row: dict[str, Any], answer: str) -> str:
    return f"Question: {row['prompt']}\nAnswer: {answer}\nIs the answer correct?"


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
