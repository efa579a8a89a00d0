"""Never pay twice: a rerun of the truncated rows only (``--rerun-if``), and a second run over
a cached dataset (``--cache-dir``), against simulators on the other core.

    python benchmarks/reuse.py [--rows N] [--cached-rows N]

1. Against a simulator that takes 0.2 s per answer, 64 at a time (a slow engine, so that the
   requests, not the start-up, are the run's cost): a first run whose answers end with
   ``length`` on about 5% of the rows (the stop sequence ``w2`` ends the others), then the
   rerun with a larger ``--max-tokens`` and ``--rerun-if 'finish_reason == "length"'``:
   requests sent (counted at the simulator) and wall time, against the first run.
2. Against a zero-latency simulator, the same rows twice with ``--cache-dir``: the second
   run's records per second for the whole command, and net of the start-up (a one-row run's
   wall time), and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import PYTHON, ROOT, Simulator, machine, measure

WORK = ROOT / "bench-results"


def requests_seen(url: str) -> int:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/sim/stats") as answer:
        return int(json.loads(answer.read())["requests_seen"])


def command(source: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [PYTHON, "-m", "vbatch", "run", str(source), "-o", str(out), "--base-url", url,
            "--quiet", "--temperature", "0", *extra]


def write_rows(path: Path, count: int) -> Path:
    with open(path, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({"id": f"r{i}", "prompt": f"question {i}"}) + "\n")
    return path


def fresh(path: Path) -> Path:
    for stale in path.parent.glob(path.name + "*"):
        stale.unlink()
    return path


def rerun_table(rows: int) -> None:
    source = write_rows(WORK / f"reuse-{rows}.jsonl", rows)
    out = fresh(WORK / "reuse.jsonl")
    with Simulator("--latency", "0.2", "--capacity", "64", "--completion-tokens", "64") as sim:
        stop = ["--stop", "w2"]
        first = measure(command(source, out, sim.url, "--max-tokens", "10", *stop))
        truncated = len(re.findall(r'"finish_reason":"length"', out.read_text()))
        before = requests_seen(sim.url)
        rerun = measure(command(source, out, sim.url, "--max-tokens", "64", *stop,
                                "--rerun-if", 'finish_reason == "length"'))
        sent = requests_seen(sim.url) - before
    print(f"\n| rerun of the truncated rows ({rows} rows, 0.2 s per answer, 64 at a time) "
          f"| requests | wall s |\n|---|---|---|\n| first run | {rows} | {first.wall_s:.2f} |\n"
          f"| --rerun-if 'finish_reason == \"length\"' ({truncated} rows, "
          f"{truncated / rows:.1%}) | {sent} | {rerun.wall_s:.2f} "
          f"({rerun.wall_s / first.wall_s:.1%} of the first) |", flush=True)


def cached_table(rows: int) -> None:
    source = write_rows(WORK / f"reuse-cached-{rows}.jsonl", rows)
    one_row = write_rows(WORK / "reuse-one.jsonl", 1)
    cache = WORK / "reuse-cache"
    shutil.rmtree(cache, ignore_errors=True)
    with Simulator("--completion-tokens", "16") as sim:
        runs = [measure(command(source, fresh(WORK / name), sim.url, "--max-tokens", "4",
                                "--cache-dir", str(cache)))
                for name in ("cache-a.jsonl", "cache-b.jsonl")]
        start = min(measure(command(one_row, fresh(WORK / "cache-one.jsonl"), sim.url,
                                    "--max-tokens", "4", "--cache-dir", str(cache))).wall_s
                    for _ in range(3))
    first, second = runs
    print(f"\n| over a cached dataset ({rows} rows) | wall s | records/s | records/s net "
          f"of the start-up ({start:.2f} s) | peak RSS MB |\n|---|---|---|---|---|\n"
          f"| first run (fills the cache) | {first.wall_s:.2f} | {rows / first.wall_s:,.0f} "
          f"| {rows / (first.wall_s - start):,.0f} | {first.peak_rss_mb:.0f} |\n"
          f"| second run (every answer reused) | {second.wall_s:.2f} | "
          f"{rows / second.wall_s:,.0f} | {rows / (second.wall_s - start):,.0f} | "
          f"{second.peak_rss_mb:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000,
                        help="rows of the rerun table")
    parser.add_argument("--cached-rows", type=int, default=200_000,
                        help="rows of the cached-dataset table")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    print(machine(), flush=True)
    rerun_table(args.rows)
    cached_table(args.cached_rows)


if __name__ == "__main__":
    main()
