"""Benchmark 5: vbatch over HTTP against vLLM offline ``LLM.generate``, on a GPU.

The same prompts (each text as it is: ``/v1/completions`` and ``LLM.generate``), the same
sampling (greedy, ``--max-tokens``), the same batch limits (the ones vbatch gives its servers
on this build: 1,024 sequences / 16,384 batched tokens on a GPU) and the same context. Goal:
vbatch at least 0.95 of offline's generated tokens/s. Runs on the CPU build too (eager, 256 /
4,096), which is how it is checked on machines without a GPU.

    python benchmarks/gpu.py [--model DIR_OR_NAME] [--prompts FILE] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import WORK, engine_env, offline_run, served, vbatch_over_http
from harness import ROOT, machine

from vbatch.defaults import DEFAULT_BATCH_LIMITS
from vbatch.servers.default_model import prepare_default_model
from vbatch.servers.options import vllm_build


def device_name() -> str:
    try:
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        names = []
    gpus = [name.strip() for name in names if name.strip()]
    return ", ".join(gpus) if gpus else "no GPU (CPU build)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="a model directory or name (default: the embedded one)")
    parser.add_argument("--prompts", type=Path, default=ROOT / "benchmarks" / "prompts_300.jsonl")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--max-model-len", type=int, default=4096)
    args = parser.parse_args()
    print(machine(), flush=True)
    WORK.mkdir(exist_ok=True)
    model = args.model or str(prepare_default_model())
    build = vllm_build()
    seqs, batched = DEFAULT_BATCH_LIMITS[build]
    context = str(args.max_model_len)
    offline = offline_run(model, args.prompts, "--api", "generate", "--max-tokens",
                          str(args.max_tokens), "--max-num-seqs", str(seqs),
                          "--max-num-batched-tokens", str(batched), "--max-model-len", context,
                          *(["--enforce-eager"] if build == "cpu" else []))
    rows = [{"client": "vLLM offline LLM.generate", "wall_s": offline["generation_s"],
             "completion_tokens": offline["completion_tokens"]}]
    server_args = ("--model", model, "--max-model-len", context)
    with served(WORK / "gpu-serve.log", engine_env(vbatch_layout=False), *server_args) as url:
        summary = vbatch_over_http(url, args.prompts, "gpu-vbatch", "--endpoint", "completions",
                                   "--max-tokens", str(args.max_tokens))
    rows.append({"client": "vbatch over HTTP (/v1/completions)", "wall_s": summary["wall_time_s"],
                 "completion_tokens": summary["completion_tokens"]})
    device = device_name()
    prompts = len(args.prompts.read_text().splitlines())
    print(f"device: {device}; model: {model}; {prompts} prompts, max_tokens {args.max_tokens}")
    print(f"{'client':>36} | {'wall_s':>8} | {'tokens':>8} | {'tok/s':>8} | {'vs offline':>10}")
    for row in rows:
        row["tokens_per_s"] = row["completion_tokens"] / row["wall_s"]
        row["ratio_to_offline"] = row["tokens_per_s"] / rows[0]["tokens_per_s"]
        print(f"{row['client']:>36} | {row['wall_s']:8.1f} | {row['completion_tokens']:8d} | "
              f"{row['tokens_per_s']:8.1f} | {row['ratio_to_offline']:10.3f}")
    (WORK / "gpu.json").write_text(json.dumps({"device": device, "model": model, "rows": rows},
                                              indent=2))


if __name__ == "__main__":
    main()
