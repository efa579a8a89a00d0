"""CPU server settings: dtype, batch size, thread binding and OpenMP waiting, measured.

Each trial starts ``vbatch serve`` (the default model, context 1,024) with one set of
settings, runs ``make run``'s job against it (``examples/prompts.jsonl``, 148 chat prompts,
``--max-tokens 128``, greedy) and records the time to a healthy server, to the first
record, and to the last, with the generated tokens per second. ``--load busy`` runs
the trials with a busy-loop process pinned to the last core (a machine shared with other
work).
``--emulate-avx2`` runs the server as an AVX2-only CPU would (see ``avx2/sitecustomize.py``).

    python benchmarks/cpu_settings.py [--trials NAME,...] [--load alone,busy] [--emulate-avx2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import WORK, fresh_output, served
from harness import PYTHON, ROOT, emulate_avx2, machine

PROMPTS = ROOT / "examples" / "prompts.jsonl"
# name: (vbatch serve arguments, environment, vbatch run arguments)
TRIALS: dict[str, tuple[list[str], dict[str, str], list[str]]] = {
    "default": ([], {}, []),
    "bf16": (["--", "--dtype", "bfloat16"], {}, []),
    "float32": (["--", "--dtype", "float32"], {}, []),
    "seqs32": (["--max-num-seqs", "32"], {}, []),
    "seqs64": (["--max-num-seqs", "64"], {}, []),
    "seqs128": (["--max-num-seqs", "128"], {}, []),
    "seqs256": (["--max-num-seqs", "256"], {}, []),
    "tokens1024": (["--max-num-batched-tokens", "1024"], {}, []),
    "tokens2048": (["--max-num-batched-tokens", "2048"], {}, []),
    "tokens4096": (["--max-num-batched-tokens", "4096"], {}, []),
    "nobind": ([], {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}, []),
    "bind": ([], {"VLLM_CPU_OMP_THREADS_BIND": f"0-{(os.cpu_count() or 1) - 1}"}, []),
    "passive": ([], {"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "nobind_passive": ([], {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_WAIT_POLICY": "PASSIVE"},
                       []),
    "active": ([], {"OMP_WAIT_POLICY": "ACTIVE"}, []),
    "spin10k": ([], {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "10000"}, []),
    "spin100k": ([], {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "100000"}, []),
}


def busy_loop() -> subprocess.Popen[bytes]:
    last = max(os.sched_getaffinity(0))
    return subprocess.Popen(["taskset", "-c", str(last), PYTHON, "-c", "while True: pass"])


def first_record_after(out: Path, started: float, process: subprocess.Popen[str]
                       ) -> float | None:
    while process.poll() is None:
        if out.exists() and out.stat().st_size > 0:
            return time.perf_counter() - started
        time.sleep(0.05)
    return None


def trial(name: str, busy: bool, emulate: bool) -> dict[str, Any]:
    serve_args, env_extra, run_args = TRIALS[name]
    env = {**os.environ, **env_extra}
    started = time.perf_counter()
    with served(WORK / f"cpu_settings_{name}.log", env, "--max-model-len", "1024",
                *serve_args) as url:
        ready = time.perf_counter() - started
        load = busy_loop() if busy else None
        try:
            return measure_job(name, url, run_args, ready, busy, emulate)
        finally:
            if load is not None:
                load.kill()
                load.wait()


def measure_job(name: str, url: str, run_args: list[str], ready: float, busy: bool,
                emulate: bool) -> dict[str, Any]:
    """``make run``'s job against the server at ``url``: how long to the first record and the
    last, and its tokens per second."""
    out, stats = WORK / f"cpu_settings_{name}.jsonl", WORK / f"cpu_settings_{name}.stats.json"
    fresh_output(out)
    began = time.perf_counter()
    client = subprocess.Popen(
        [PYTHON, "-m", "vbatch", "run", str(PROMPTS), "-o", str(out), "--base-url", url,
         "--max-tokens", "128", "--temperature", "0", "--quiet", "--stats-json",
         str(stats), *run_args], text=True)
    first = first_record_after(out, began, client)
    client.wait()
    wall = time.perf_counter() - began
    summary = json.loads(stats.read_text())
    return {"trial": name, "busy_core": busy, "emulated_avx2": emulate,
            "ready_s": round(ready, 1), "first_record_s": first and round(first, 1),
            "wall_s": round(wall, 1), "ok": summary["rows_ok"],
            "tokens_per_s": round(summary["completion_tokens"] / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", default="default", help="comma-separated: " + ",".join(TRIALS))
    parser.add_argument("--load", default="alone",
                        help="alone, busy (a busy loop on the last core) or alone,busy")
    parser.add_argument("--emulate-avx2", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    if args.emulate_avx2:
        emulate_avx2()
    print(machine(), flush=True)
    results = WORK / "cpu_settings.jsonl"
    for name in args.trials.split(","):
        for busy in (load == "busy" for load in args.load.split(",")):
            row = {"machine": machine(), **trial(name, busy, args.emulate_avx2)}
            print(json.dumps(row), flush=True)
            with open(results, "a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
