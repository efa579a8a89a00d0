"""The reference pattern users write today, kept as the benchmarks' baseline.

``openai.AsyncOpenAI``, every row created as a task at once, each guarded by
``asyncio.Semaphore(500)``, ``asyncio.gather``, results written at the end. With ``judge``, each
row takes two steps, one after the other (a draft, then a judge choosing a label), as users
write a chain by hand.

    python benchmarks/baseline_openai.py INPUT OUTPUT BASE_URL MODEL MAX_TOKENS [judge]
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from openai import AsyncOpenAI


def judge_prompt(row: dict[str, Any], answer: str) -> str:
    """The judge step's prompt for a row's draft ``answer``."""
    return f"Question: {row['prompt']}\nAnswer: {answer}\nIs the answer correct?"


async def main(source: str, target: str, base_url: str, model: str, max_tokens: int,
               judge: bool = False) -> None:
    client = AsyncOpenAI(base_url=base_url, api_key="EMPTY")
    semaphore = asyncio.Semaphore(500)
    with open(source) as handle:
        rows = [json.loads(line) for line in handle]

    async def one(row: dict[str, Any]) -> dict[str, Any]:
        async with semaphore:
            response = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": row["prompt"]}],
                max_tokens=max_tokens,
                temperature=0,
            )
            text = response.choices[0].message.content
            result = {"text": text, "completion_tokens":
                      response.usage.completion_tokens if response.usage else 0}
            if judge:
                verdict = await client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": judge_prompt(row, text or "")}],
                    max_tokens=4, temperature=0,
                    extra_body={"structured_outputs": {"choice": ["correct", "wrong"]}})
                result["verdict"] = verdict.choices[0].message.content
        return result

    results = await asyncio.gather(*(one(row) for row in rows))
    with open(target, "w") as handle:
        for result in results:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                     sys.argv[6:7] == ["judge"]))
