"""vLLM offline on the benchmark prompts: the engine's ceiling.

    python benchmarks/offline_llm.py MODEL PROMPTS [--api chat|generate] [--max-tokens N]
        [--max-num-seqs N] [--max-num-batched-tokens N] [--max-model-len N] [--enforce-eager]

``chat`` sends each prompt as a user message through ``LLM.chat``; ``generate`` sends the
prompt text as it is through ``LLM.generate``. Greedy. Prints one JSON line: load and
generation seconds, prompt and completion tokens.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("prompts")
    parser.add_argument("--api", choices=["chat", "generate"], default="chat")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-num-seqs", type=int)
    parser.add_argument("--max-num-batched-tokens", type=int)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    started = time.perf_counter()
    from vllm import LLM, SamplingParams

    limits = {name: value for name, value in (("max_num_seqs", args.max_num_seqs),
                                              ("max_num_batched_tokens",
                                               args.max_num_batched_tokens)) if value}
    llm = LLM(model=args.model, enforce_eager=args.enforce_eager, dtype=args.dtype,
              max_model_len=args.max_model_len, **limits)
    loaded = time.perf_counter()
    with open(args.prompts) as handle:
        prompts = [json.loads(line)["prompt"] for line in handle if line.strip()]
    sampling = SamplingParams(max_tokens=args.max_tokens, temperature=0)
    if args.api == "chat":
        outputs = llm.chat([[{"role": "user", "content": p}] for p in prompts], sampling,
                           use_tqdm=False)
    else:
        outputs = llm.generate(prompts, sampling, use_tqdm=False)
    done = time.perf_counter()
    print(json.dumps({
        "load_s": loaded - started,
        "generation_s": done - loaded,
        "prompt_tokens": sum(len(o.prompt_token_ids or []) for o in outputs),
        "completion_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
    }), flush=True)


if __name__ == "__main__":
    main()
