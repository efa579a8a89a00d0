"""The Python API as a user calls it, for ``make bench``'s ``api`` rows.

    python benchmarks/api_client.py generate INPUT BASE_URL   # vbatch.generate(list of prompts)
    python benchmarks/api_client.py stream COUNT BASE_URL     # vbatch.stream(a generator), dropped

``generate`` reads the prompts into a list first, as the baseline does.
"""

from __future__ import annotations

import asyncio
import json
import sys

import vbatch


def generate(source: str, url: str) -> None:
    with open(source) as handle:
        prompts = [json.loads(line)["prompt"] for line in handle]
    out = vbatch.generate(prompts, base_url=url, max_tokens=8, concurrency=256, progress=False)
    assert len(out) == len(prompts)


async def stream(count: int, url: str) -> None:
    seen = 0
    async for _ in vbatch.stream((f"prompt number {i}" for i in range(count)), base_url=url,
                                 max_tokens=2, concurrency=256):
        seen += 1
    assert seen == count


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        generate(sys.argv[2], sys.argv[3])
    else:
        asyncio.run(stream(int(sys.argv[2]), sys.argv[3]))
