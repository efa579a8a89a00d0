"""Start-up of the managed CPU vLLM server in both process layouts, alternated.

The command vbatch runs (default model, context 2,048), from launch until ``/health``
answers (polled every 50 ms), then the time to stop its process group; with vbatch's
layout (``VLLM_ENABLE_V1_MULTIPROCESSING=0``: the one worker inside the engine process)
and with vLLM's own (the worker in a process of its own).

    python benchmarks/startup.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import LAYOUT, WORK, engine_env
from harness import machine

from vbatch.servers.default_model import prepare_default_model
from vbatch.servers.options import ServerOptions, server_command
from vbatch.servers.process import free_port


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start_and_stop(vbatch_layout: bool) -> tuple[float, float]:
    options = ServerOptions(model=str(prepare_default_model()), max_model_len=2048,
                            log_path=WORK / "startup.log")
    port = free_port()
    env = engine_env(vbatch_layout)
    started = time.perf_counter()
    with open(options.log_path, "w") as log:
        server = subprocess.Popen(server_command(options, port), stdout=log, stderr=log,
                                  env=env, start_new_session=True)
    while not healthy(f"http://127.0.0.1:{port}/health"):
        if server.poll() is not None:
            raise RuntimeError(f"the server exited; see {options.log_path}")
        time.sleep(0.05)
    ready = time.perf_counter() - started
    stopping = time.perf_counter()
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)
    return ready, time.perf_counter() - stopping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(machine(), flush=True)
    WORK.mkdir(exist_ok=True)
    results: dict[str, list[tuple[float, float]]] = {"vbatch": [], "vllm": []}
    for _ in range(args.rounds):
        results["vbatch"].append(start_and_stop(True))
        results["vllm"].append(start_and_stop(False))
    print(f"{'layout':>40} | {'healthy after s (each)':>24} | {'median':>6} | {'stop s':>6}")
    names = {"vbatch": f"{LAYOUT}=0 (vbatch)", "vllm": "vLLM's default"}
    for key, runs in results.items():
        each = ", ".join(f"{ready:.1f}" for ready, _ in runs)
        print(f"{names[key]:>40} | {each:>24} | {statistics.median(r for r, _ in runs):6.1f} | "
              f"{statistics.median(s for _, s in runs):6.2f}")
    (WORK / "startup.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
