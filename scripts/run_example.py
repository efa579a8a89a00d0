"""`make run`: the bundled example prompts through a local server, with the summary printed.

Until the managed vLLM server lands this runs against vbatch's simulator, and says so.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    simulator = subprocess.Popen(
        [sys.executable, "-m", "vbatch.simulator", "--port", "0", "--latency", "0.05"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert simulator.stdout is not None
        url = simulator.stdout.readline().rsplit(" ", 1)[1].strip()
        print(f"make run: using vbatch's simulated server at {url} (no real model yet)")
        output = ROOT / "results.jsonl"
        command = [
            sys.executable, "-m", "vbatch", "run", str(ROOT / "examples" / "prompts.jsonl"),
            "-o", str(output), "--base-url", url, "--max-tokens", "64", "--keep", "task",
        ]
        code = subprocess.call(command)
        print(f"make run: results in {output}")
        return code
    finally:
        simulator.terminate()
        simulator.wait()


if __name__ == "__main__":
    sys.exit(main())
