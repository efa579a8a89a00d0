"""Benchmark 5: embeddings on the real CPU vLLM engine with the embedded pooling model
(all-MiniLM-L6-v2), 20,000 texts, in one run:

- vLLM offline ``LLM.embed`` (the engine's ceiling: the embed call alone, and end to end);
- ``vbatch run --endpoint embeddings`` end to end (its managed server, started by it) and its
  embedding phase (``--stats-json``), against the offline embed call;
- ``vllm.entrypoints.openai.run_batch`` on an OpenAI Batch file of the same texts, end to end,
  against ``vbatch run-batch`` with the same command line (one word changed).

Every engine gets the same settings (dtype, context, eager, vbatch's CPU process layout).

    python benchmarks/embeddings.py [--texts N] [--emulate-avx2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import WORK, cpu_dtype, fresh_output, timed
from harness import PYTHON, emulate_avx2, machine

from vbatch.servers.default_model import DEFAULT_POOLING_MODEL_NAME, prepare_pooling_model

CONTEXT = 256
ENGINE_FLAGS = ["--max-model-len", str(CONTEXT), "--enforce-eager"]
OFFLINE = """
import json, sys, time
started = time.perf_counter()
from vllm import LLM
llm = LLM(model=sys.argv[1], runner="pooling", dtype=sys.argv[3], max_model_len=int(sys.argv[4]),
          enforce_eager=True)
texts = [json.loads(line)["text"] for line in open(sys.argv[2])]
loaded = time.perf_counter()
outputs = llm.embed(texts, use_tqdm=False)
done = time.perf_counter()
assert len(outputs) == len(texts) and len(outputs[0].outputs.embedding) == 384
print(json.dumps({"load_s": loaded - started, "embed_s": done - loaded}))
"""
SENTENCE = ("vLLM serves language models fast on many machines and the batch client keeps every "
            "row exactly once while the server embeds documents queries passages and questions "
            "about science history cooking travel code and music")
WORDS = SENTENCE.split()


def write_texts(path: Path, count: int) -> Path:
    """``count`` texts of 8 to 64 words, each different."""
    with open(path, "w") as handle:
        for i in range(count):
            length = 8 + (i * 7919) % 57
            words = [WORDS[(i * 31 + j * 17) % len(WORDS)] for j in range(length)]
            handle.write(json.dumps({"id": f"t{i}", "text": f"{i} " + " ".join(words)}) + "\n")
    return path


def write_batch(texts: Path, path: Path) -> Path:
    with open(texts) as source, open(path, "w") as target:
        for line in source:
            row = json.loads(line)
            target.write(json.dumps({"custom_id": row["id"], "method": "POST",
                                     "url": "/v1/embeddings",
                                     "body": {"model": DEFAULT_POOLING_MODEL_NAME,
                                              "input": row["text"]}}) + "\n")
    return path


def offline(model: str, texts: Path) -> list[dict[str, Any]]:
    wall, done = timed([PYTHON, "-c", OFFLINE, model, str(texts), cpu_dtype(), str(CONTEXT)])
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return [{"client": "vLLM offline LLM.embed", "phase": "embedding", "wall_s": data["embed_s"]},
            {"client": "vLLM offline LLM.embed", "phase": "end to end", "wall_s": wall}]


def vbatch_run(texts: Path) -> list[dict[str, Any]]:
    out, stats = WORK / "embed_vbatch.jsonl", WORK / "embed_vbatch.stats.json"
    fresh_output(out)
    wall, _ = timed([PYTHON, "-m", "vbatch", "run", str(texts), "-o", str(out), "--endpoint",
                     "embeddings", "--prompt-field", "text", "--quiet", "--stats-json",
                     str(stats), "--max-model-len", str(CONTEXT)])
    phase = json.loads(stats.read_text())["wall_time_s"]
    return [{"client": "vbatch run --endpoint embeddings", "phase": "embedding",
             "wall_s": phase},
            {"client": "vbatch run --endpoint embeddings", "phase": "end to end",
             "wall_s": wall}]


def batch_tools(model: str, batch: Path) -> list[dict[str, Any]]:
    rows = []
    for name, command in (
        ("vllm run_batch", [PYTHON, "-m", "vllm.entrypoints.openai.run_batch"]),
        ("vbatch run-batch (same flags)", [PYTHON, "-m", "vbatch", "run-batch", "--quiet"]),
    ):
        out = WORK / f"embed_{name.split()[0]}_batch_out.jsonl"
        journal = Path(f"{out}.journal.jsonl")
        for stale in (out, journal, Path(f"{journal}.manifest.json")):
            stale.unlink(missing_ok=True)
        wall, _ = timed([*command, "-i", str(batch), "-o", str(out), "--model", model,
                         "--served-model-name", DEFAULT_POOLING_MODEL_NAME, "--runner",
                         "pooling", "--dtype", cpu_dtype(), *ENGINE_FLAGS])
        with open(out) as handle:
            good = sum(1 for line in handle if json.loads(line)["error"] is None)
        rows.append({"client": name, "phase": "end to end", "wall_s": wall, "ok": good})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="run every engine as on an AVX2-only CPU (float32)")
    args = parser.parse_args()
    if args.emulate_avx2:
        emulate_avx2()
    WORK.mkdir(exist_ok=True)
    print(machine(), flush=True)
    model = str(prepare_pooling_model())
    texts = write_texts(WORK / f"texts-{args.texts}.jsonl", args.texts)
    batch = write_batch(texts, WORK / f"embed-batch-{args.texts}.jsonl")
    started = time.perf_counter()
    rows = offline(model, texts) + vbatch_run(texts) + batch_tools(model, batch)
    for row in rows:
        row["texts_per_s"] = args.texts / row["wall_s"]
    ceiling = {r["phase"]: r["texts_per_s"] for r in rows if r["client"].startswith("vLLM")}
    for row in rows:
        if row["client"].startswith("vbatch run "):
            row["ratio_to_offline"] = row["texts_per_s"] / ceiling[row["phase"]]
    run_batch = next(r for r in rows if r["client"] == "vllm run_batch")
    for row in rows:
        if "run-batch" in row["client"]:
            row["ratio_to_run_batch"] = row["texts_per_s"] / run_batch["texts_per_s"]
    print(f"{'client':>34} | {'phase':>10} | {'wall_s':>8} | {'texts/s':>8} | ratio")
    for row in rows:
        ratio = row.get("ratio_to_offline", row.get("ratio_to_run_batch", ""))
        print(f"{row['client']:>34} | {row['phase']:>10} | {row['wall_s']:8.2f} | "
              f"{row['texts_per_s']:8.1f} | {ratio if ratio == '' else f'{ratio:.3f}'}")
    print(f"({time.perf_counter() - started:.0f} s in all)")
    (WORK / "embeddings.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
