"""Never pay twice: a rerun of the truncated rows only (``--rerun-if``), and a second run over
a cached dataset (``--cache-dir``), against a zero-latency simulator on the other core.

    python benchmarks/reuse.py [--rows N]

1. A first run whose answers end with ``length`` on some rows (a stop sequence ends the
   others), then the rerun with a larger ``--max-tokens`` and ``--rerun-if 'finish_reason ==
   "length"'``: requests sent (counted at the simulator) and wall time, against the first run.
2. The same rows twice with ``--cache-dir``: the second run's records per second and peak RSS.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    print(machine(), flush=True)
    source = WORK / f"reuse-{args.rows}.jsonl"
    with open(source, "w") as handle:
        for i in range(args.rows):
            handle.write(json.dumps({"id": f"r{i}", "prompt": f"question {i}"}) + "\n")
    out, cache = WORK / "reuse.jsonl", WORK / "reuse-cache"
    for stale in WORK.glob("reuse.jsonl*"):
        stale.unlink()
    shutil.rmtree(cache, ignore_errors=True)
    with Simulator("--completion-tokens", "16") as sim:
        # A stop sequence ends most answers early; those it does not reach end with length.
        stop = ["--stop", "w1", "--stop", "w2", "--stop", "w3"]
        first = measure(command(source, out, sim.url, "--max-tokens", "5", *stop))
        text = out.read_text()
        truncated = len(re.findall(r'"finish_reason":"length"', text))
        before = requests_seen(sim.url)
        rerun = measure(command(source, out, sim.url, "--max-tokens", "64", *stop,
                                "--rerun-if", 'finish_reason == "length"'))
        sent = requests_seen(sim.url) - before
        print(f"\n| rerun of the truncated rows ({args.rows} rows) | requests | wall s |\n"
              f"|---|---|---|\n| first run | {args.rows} | {first.wall_s:.2f} |\n"
              f"| --rerun-if 'finish_reason == \"length\"' ({truncated} rows, "
              f"{truncated / args.rows:.1%}) | {sent} | {rerun.wall_s:.2f} "
              f"({rerun.wall_s / first.wall_s:.1%} of the first) |")
        runs = []
        for name in ("cache-a.jsonl", "cache-b.jsonl"):
            target = WORK / name
            for stale in WORK.glob(name + "*"):
                stale.unlink()
            runs.append(measure(command(source, target, sim.url, "--max-tokens", "4",
                                        "--cache-dir", str(cache))))
        second = runs[1]
        print(f"\n| over a cached dataset ({args.rows} rows) | wall s | records/s | peak RSS "
              f"MB |\n|---|---|---|---|\n| first run (fills the cache) | {runs[0].wall_s:.2f} "
              f"| {args.rows / runs[0].wall_s:.0f} | {runs[0].peak_rss_mb:.0f} |\n"
              f"| second run (every answer reused) | {second.wall_s:.2f} | "
              f"{args.rows / second.wall_s:.0f} | {second.peak_rss_mb:.0f} |")


if __name__ == "__main__":
    main()
