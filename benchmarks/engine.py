"""Benchmark 4: the real CPU vLLM engine, default model, 300 chat prompts, max_tokens 64, greedy.

In one run: vLLM offline ``LLM.chat`` (the engine's ceiling: the faster of vLLM's default
process layout and the one vbatch gives its CPU servers, the worker inside the engine
process); ``vllm.entrypoints.openai.run_batch`` end to end (the peer tool) once with
vbatch's layout; vbatch against a running server (generation phase); the baseline client
against the same server; vbatch end to end with its managed server sized from the data;
then ``--rounds`` times run_batch as its users run it and vbatch end to end given the
same context, alternated (run-to-run noise on a shared machine is several percent).

    python benchmarks/engine.py [--prompts FILE] [--rounds N]
    python benchmarks/engine.py --clients N [--vbatch-options "..."]

With ``--clients N``, only the clients against one ``vbatch serve``: vbatch ``--base-url`` and
the baseline script, alternated N times (the prefix cache reset before each run), each round
printed, both timed as whole commands; ``--vbatch-options`` adds a third client, vbatch with
those options (e.g. ``--concurrency 500``, the baseline's bound).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import PYTHON, ROOT, baseline_command, emulate_avx2, machine

from vbatch.servers.cpu import choose_dtype, cpu_info
from vbatch.servers.default_model import DEFAULT_MODEL_NAME, prepare_default_model
from vbatch.servers.options import ServerOptions, server_environment

WORK = ROOT / "bench-results"
MAX_TOKENS = 64
SEQS, BATCHED, CONTEXT = 256, 4096, 2048


LAYOUT = "VLLM_ENABLE_V1_MULTIPROCESSING"


def engine_env(vbatch_layout: bool = True) -> dict[str, str]:
    """The CPU settings vbatch gives its servers; with ``vbatch_layout`` False, vLLM's own
    process layout (its worker in a process of its own)."""
    options = ServerOptions(model=str(prepare_default_model()), log_path=WORK / "unused.log")
    env = {**server_environment(options, None), "VLLM_SERVER_DEV_MODE": "1"}
    if not vbatch_layout:
        env.pop(LAYOUT, None)
    return env


def timed(command: list[str], vbatch_layout: bool = True
          ) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          env=engine_env(vbatch_layout))
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{command[:5]} failed: {done.stderr[-3000:]}")
    return time.perf_counter() - started, done


def completion_tokens(path: Path, key: str = "usage") -> int:
    total = 0
    with open(path) as handle:
        for line in handle:
            record = json.loads(line)
            usage = record.get(key) or (record.get("response") or {}).get("body", {}).get("usage")
            if usage is None and "completion_tokens" in record:
                total += record["completion_tokens"]
            elif usage:
                total += usage["completion_tokens"]
    return total


def layout_name(vbatch_layout: bool) -> str:
    return f"{LAYOUT}=0" if vbatch_layout else "vLLM's default layout"


def offline_run(model: str, prompts: Path, *options: str, vbatch_layout: bool = True
                ) -> dict[str, Any]:
    """``benchmarks/offline_llm.py`` with ``options``: what it measured."""
    _, done = timed([PYTHON, str(ROOT / "benchmarks" / "offline_llm.py"), model, str(prompts),
                     *options], vbatch_layout)
    return dict(json.loads(next(x for x in done.stdout.splitlines()
                                if x.startswith('{"load_s"'))))


def fresh_output(out: Path) -> None:
    """No records or manifest left at ``out`` from an earlier run."""
    out.unlink(missing_ok=True)
    Path(str(out) + ".manifest.json").unlink(missing_ok=True)


def vbatch_over_http(url: str, prompts: Path, name: str, *options: str) -> dict[str, Any]:
    """A greedy ``vbatch run`` of ``prompts`` against ``url`` into a fresh WORK/NAME.jsonl:
    its ``--stats-json``."""
    out, stats = WORK / f"{name}.jsonl", WORK / f"{name}.stats.json"
    fresh_output(out)
    timed([PYTHON, "-m", "vbatch", "run", str(prompts), "-o", str(out), "--base-url", url,
           "--temperature", "0", "--quiet", "--stats-json", str(stats), *options])
    return dict(json.loads(stats.read_text()))


def cpu_dtype() -> str:
    """The dtype vbatch gives its CPU servers here."""
    if os.environ.get("VBATCH_EMULATE_AVX2"):
        return "float32"
    return choose_dtype(cpu_info()).dtype


def offline(model: str, prompts: Path, vbatch_layout: bool) -> dict[str, Any]:
    data = offline_run(model, prompts, "--max-tokens", str(MAX_TOKENS), "--max-num-seqs",
                       str(SEQS), "--max-num-batched-tokens", str(BATCHED), "--max-model-len",
                       str(CONTEXT), "--enforce-eager", "--dtype", cpu_dtype(),
                       vbatch_layout=vbatch_layout)
    return {"client": f"vLLM offline LLM.chat ({layout_name(vbatch_layout)}, {cpu_dtype()})",
            "phase": "generation", "wall_s": data["generation_s"],
            "completion_tokens": data["completion_tokens"]}


def run_batch(model: str, prompts: Path, vbatch_layout: bool) -> dict[str, Any]:
    batch = WORK / "run_batch_in.jsonl"
    out = WORK / "run_batch_out.jsonl"
    with open(prompts) as source, open(batch, "w") as target:
        for line in source:
            row = json.loads(line)
            target.write(json.dumps({
                "custom_id": row["id"], "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": DEFAULT_MODEL_NAME, "max_tokens": MAX_TOKENS, "temperature": 0,
                         "messages": [{"role": "user", "content": row["prompt"]}]},
            }) + "\n")
    out.unlink(missing_ok=True)
    # As its users run it: vLLM's own dtype and layout; with vbatch's layout, vbatch's dtype.
    dtype = ["--dtype", cpu_dtype()] if vbatch_layout else []
    wall, _ = timed([PYTHON, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(batch), "-o",
                     str(out), "--model", model, "--served-model-name", DEFAULT_MODEL_NAME,
                     "--enforce-eager", "--max-num-seqs", str(SEQS), "--max-num-batched-tokens",
                     str(BATCHED), "--max-model-len", str(CONTEXT), *dtype], vbatch_layout)
    settings = f"{layout_name(vbatch_layout)}, {dtype[1]}" if dtype else "vLLM's defaults"
    return {"client": f"vllm run_batch ({settings})", "phase": "end to end",
            "wall_s": wall,
            "completion_tokens": completion_tokens(out)}


def vbatch_run_batch(model: str) -> dict[str, Any]:
    """``vbatch run-batch`` on run_batch's own input file, with the same command line (one
    word changed): its own server, started by it, as run_batch starts its engine."""
    batch = WORK / "run_batch_in.jsonl"
    out = WORK / "vbatch_run_batch_out.jsonl"
    for stale in (out, out.with_name(out.name + ".journal.jsonl"),
                  out.with_name(out.name + ".journal.jsonl.manifest.json")):
        stale.unlink(missing_ok=True)
    wall, _ = timed([PYTHON, "-m", "vbatch", "run-batch", "-i", str(batch), "-o", str(out),
                     "--model", model, "--served-model-name", DEFAULT_MODEL_NAME,
                     "--enforce-eager", "--max-num-seqs", str(SEQS), "--max-num-batched-tokens",
                     str(BATCHED), "--max-model-len", str(CONTEXT), "--quiet"],
                    vbatch_layout=False)
    return {"client": "vbatch run-batch (same flags)", "phase": "end to end", "wall_s": wall,
            "completion_tokens": completion_tokens(out)}


def reset_prefix_cache(url: str) -> None:
    root = url.removesuffix("/v1")
    request = urllib.request.Request(root + "/reset_prefix_cache", data=b"", method="POST")
    urllib.request.urlopen(request, timeout=30).read()


@contextlib.contextmanager
def served(log: Path, env: dict[str, str], *args: str) -> Iterator[str]:
    """A ``vbatch serve`` for the block (the default model, context CONTEXT, unless ``args``
    say otherwise): its URL."""
    server = subprocess.Popen(
        [PYTHON, "-m", "vbatch", "serve", "--port", "0", "--log", str(log),
         *(args or ("--max-model-len", str(CONTEXT)))], stdout=subprocess.PIPE, text=True,
        env=env)
    assert server.stdout is not None
    url = ""
    for line in server.stdout:
        if " at http" in line:
            url = line.rsplit(" ", 1)[1].strip()
            break
    try:
        if not url:
            raise RuntimeError(f"the server did not start; see {log}")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)
        server.stdout.close()


def against_server(prompts: Path) -> list[dict[str, Any]]:
    rows = []
    with served(WORK / "serve.log", engine_env(vbatch_layout=False)) as url:
        reset_prefix_cache(url)
        summary = vbatch_over_http(url, prompts, "vbatch_served", "--max-tokens",
                                   str(MAX_TOKENS))
        rows.append({"client": "vbatch --base-url", "phase": "generation",
                     "wall_s": summary["wall_time_s"],
                     "completion_tokens": summary["completion_tokens"]})
        reset_prefix_cache(url)
        out = WORK / "baseline_served.jsonl"
        wall, _ = timed(baseline_command(prompts, out, url, DEFAULT_MODEL_NAME, MAX_TOKENS))
        rows.append({"client": "baseline (AsyncOpenAI+gather)", "phase": "whole script",
                     "wall_s": wall, "completion_tokens": completion_tokens(out)})
    return rows


def clients_rounds(prompts: Path, rounds: int, extra: list[str]) -> None:
    """vbatch ``--base-url`` and the baseline (and vbatch with ``extra``) against one server,
    alternated ``rounds`` times, whole commands timed: each round, then the medians."""
    clients: dict[str, list[str]] = {"vbatch --base-url": []}
    if extra:
        clients["vbatch " + " ".join(extra)] = extra
    walls: dict[str, list[float]] = {}
    with served(WORK / "serve.log", engine_env(vbatch_layout=False)) as url:
        for round_number in range(1, rounds + 1):
            for name, options in [*clients.items(), ("baseline (AsyncOpenAI+gather)", None)]:
                reset_prefix_cache(url)
                out = WORK / "clients.jsonl"
                fresh_output(out)
                command = (baseline_command(prompts, out, url, DEFAULT_MODEL_NAME, MAX_TOKENS)
                           if options is None else
                           [PYTHON, "-m", "vbatch", "run", str(prompts), "-o", str(out),
                            "--base-url", url, "--temperature", "0", "--quiet",
                            "--max-tokens", str(MAX_TOKENS), *options])
                wall, _ = timed(command)
                walls.setdefault(name, []).append(wall)
                print(f"round {round_number}: {name}: {wall:.1f} s, "
                      f"{completion_tokens(out) / wall:.1f} tok/s", flush=True)
    base = walls["baseline (AsyncOpenAI+gather)"]
    print(f"\n| client (whole command, {rounds} rounds) | median wall s | per round, vs the "
          f"baseline |\n|---|---|---|")
    for name, samples in walls.items():
        ratios = ", ".join(f"{b / w:.3f}" for w, b in zip(samples, base, strict=True))
        print(f"| {name} | {statistics.median(samples):.1f} | {ratios} |")


def managed_end_to_end(prompts: Path, *extra: str) -> dict[str, Any]:
    """vbatch with its own server: sized from the data, or given the context run_batch gets
    (then the server starts while the prompts are checked and counted)."""
    out = WORK / "vbatch_managed.jsonl"
    fresh_output(out)
    wall, _ = timed([PYTHON, "-m", "vbatch", "run", str(prompts), "-o", str(out),
                     "--max-tokens", str(MAX_TOKENS), "--temperature", "0", "--quiet", *extra],
                    vbatch_layout=False)
    name = "vbatch (managed server" + (", " + " ".join(extra) if extra else "") + ")"
    return {"client": name, "phase": "end to end", "wall_s": wall,
            "completion_tokens": completion_tokens(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=Path, default=ROOT / "benchmarks" / "prompts_300.jsonl")
    parser.add_argument("--rounds", type=int, default=2,
                        help="run_batch and vbatch end to end, alternated this many times")
    parser.add_argument("--clients", type=int, default=0,
                        help="only vbatch --base-url and the baseline, alternated N times")
    parser.add_argument("--vbatch-options", default="",
                        help="with --clients: a third client, vbatch with these options")
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="run the engine as an AVX2-only CPU would (avx2/sitecustomize.py)")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    if args.emulate_avx2:
        emulate_avx2()
    print(machine(), flush=True)
    if args.clients:
        clients_rounds(args.prompts, args.clients, args.vbatch_options.split())
        return
    model = str(prepare_default_model())
    rows = [offline(model, args.prompts, False), offline(model, args.prompts, True),
            run_batch(model, args.prompts, True), *against_server(args.prompts),
            managed_end_to_end(args.prompts)]
    pairs = []
    for round_number in range(1, args.rounds + 1):
        pair = [run_batch(model, args.prompts, False),
                managed_end_to_end(args.prompts, "--max-model-len", str(CONTEXT)),
                vbatch_run_batch(model)]
        for row in pair:
            row["client"] += f", round {round_number}"
        pairs.append(pair)
        rows += pair
    for row in rows:
        row["tokens_per_s"] = row["completion_tokens"] / row["wall_s"]
    ceiling = max(rows[0]["tokens_per_s"], rows[1]["tokens_per_s"])
    peer = statistics.median(pair[0]["tokens_per_s"] for pair in pairs)
    print(f"{'client':>58} | {'phase':>12} | {'wall_s':>8} | {'tokens':>7} | {'tok/s':>7} | "
          f"{'vs offline':>10} | {'vs run_batch':>12}")
    for row in rows:
        row["ratio_to_offline"] = row["tokens_per_s"] / ceiling
        row["ratio_to_run_batch"] = row["tokens_per_s"] / peer
        print(f"{row['client']:>58} | {row['phase']:>12} | {row['wall_s']:8.1f} | "
              f"{row['completion_tokens']:7d} | {row['tokens_per_s']:7.1f} | "
              f"{row['ratio_to_offline']:10.3f} | {row['ratio_to_run_batch']:12.3f}")
    for position, name in ((1, "vbatch managed end to end"), (2, "vbatch run-batch")):
        ratios = [pair[position]["tokens_per_s"] / pair[0]["tokens_per_s"] for pair in pairs]
        print(f"\n{name} over run_batch (vLLM's default layout), round by round: "
              + ", ".join(f"{r:.3f}" for r in ratios))
    (WORK / "engine.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    print(f"\nwritten to {WORK / 'engine.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
