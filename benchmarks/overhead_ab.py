"""Client CPU per request of this checkout against an earlier commit, alternated rounds in one
run (a change's per-request cost, within noise or not).

    python benchmarks/overhead_ab.py --before REV [--requests N] [--rounds N]

The earlier commit is checked out in a temporary git worktree and run from it with
``PYTHONPATH`` (same virtual environment). Each round runs both, ``--quiet`` and with progress
lines on (stderr is a pipe, not a terminal), against a zero-latency simulator on the other core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, Simulator, machine, measure, vbatch_command, write_prompts

WORK = ROOT / "bench-results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", required=True, help="the earlier commit")
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    print(machine(), flush=True)
    source = write_prompts(WORK / f"prompts-{args.requests}.jsonl", args.requests)
    cpu: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", str(tree), args.before],
                       check=True)
        try:
            with Simulator("--completion-tokens", "8") as sim:
                for _ in range(args.rounds):
                    for version, path in ((f"before ({args.before})", str(tree / "src")),
                                          ("after", None)):
                        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
                        if path:
                            env["PYTHONPATH"] = path
                        for mode in ("--quiet", "progress lines"):
                            command = vbatch_command(source, WORK / "ab.out", sim.url,
                                                     "--concurrency", "256")
                            if mode != "--quiet":
                                command.remove("--quiet")
                            os.environ.clear()
                            os.environ.update(env)
                            m = measure(command)
                            cpu.setdefault((version, mode), []).append(
                                m.cpu_s / args.requests * 1000)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False)
    print(f"{'version':>24} | {'mode':>14} | median ms CPU/request | range")
    for (version, mode), values in cpu.items():
        print(f"{version:>24} | {mode:>14} | {statistics.median(values):21.4f} | "
              f"{min(values):.4f}-{max(values):.4f}")


if __name__ == "__main__":
    main()
