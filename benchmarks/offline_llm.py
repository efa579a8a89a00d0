"""vLLM offline ``LLM.chat`` on the benchmark prompts: the engine's ceiling.

    python benchmarks/offline_llm.py MODEL_DIR PROMPTS MAX_TOKENS MAX_NUM_SEQS MAX_BATCHED_TOKENS

Prints one JSON line: load and generation seconds, prompt and completion tokens.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    model, prompts, max_tokens, seqs, batched = sys.argv[1:6]
    started = time.perf_counter()
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, enforce_eager=True, max_num_seqs=int(seqs),
              max_num_batched_tokens=int(batched), max_model_len=2048)
    loaded = time.perf_counter()
    with open(prompts) as handle:
        conversations = [[{"role": "user", "content": json.loads(line)["prompt"]}]
                         for line in handle]
    outputs = llm.chat(conversations, SamplingParams(max_tokens=int(max_tokens), temperature=0),
                       use_tqdm=False)
    done = time.perf_counter()
    print(json.dumps({
        "load_s": loaded - started,
        "generation_s": done - loaded,
        "prompt_tokens": sum(len(o.prompt_token_ids or []) for o in outputs),
        "completion_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
    }), flush=True)


if __name__ == "__main__":
    main()
