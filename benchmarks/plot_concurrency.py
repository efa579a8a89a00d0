"""Plot adaptive concurrency over a run: vbatch's bound and in-flight requests, the server's
running and waiting requests, and throughput.

    python benchmarks/plot_concurrency.py [--rows 12000] [--capacity 128] [--latency 0.5]

Runs vbatch (``--concurrency auto``) against the simulator with a fixed batch capacity and
writes docs/adaptive-concurrency.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from harness import ROOT, Simulator, measure, vbatch_command, write_prompts

WORK = ROOT / "bench-results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=12_000)
    parser.add_argument("--capacity", type=int, default=128)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "adaptive-concurrency.png")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    source = write_prompts(WORK / f"prompts-{args.rows}.jsonl", args.rows)
    stats = WORK / "adaptive.stats.json"
    with Simulator("--capacity", str(args.capacity), "--latency", str(args.latency)) as sim:
        measure(vbatch_command(source, WORK / "adaptive.out", sim.url, "--stats-json",
                               str(stats)))
    summary = json.loads(stats.read_text())
    trace = summary["concurrency_trace"]
    t = [s["t"] for s in trace]
    rate = [0.0] + [(b["done"] - a["done"]) / (b["t"] - a["t"])
                    for a, b in itertools.pairwise(trace)]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top.plot(t, [s["limit"] for s in trace], label="vbatch bound")
    top.plot(t, [s["in_flight"] for s in trace], label="vbatch in flight")
    top.plot(t, [s["running"] for s in trace], label="server running")
    top.plot(t, [s["waiting"] for s in trace], label="server waiting")
    top.axhline(args.capacity, color="grey", linestyle=":", label="server capacity")
    top.set_ylabel("requests")
    top.legend(loc="upper right", fontsize="small")
    bottom.plot(t, rate, color="black", label="rows/s")
    bottom.axhline(args.capacity / args.latency, color="grey", linestyle=":",
                   label="ideal (capacity / latency)")
    bottom.set_ylabel("rows/s")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="lower right", fontsize="small")
    figure.suptitle(f"--concurrency auto against a server of capacity {args.capacity}, "
                    f"{args.latency:g} s per request")
    figure.tight_layout()
    args.out.parent.mkdir(exist_ok=True)
    figure.savefig(args.out, dpi=90)
    achieved = args.rows / summary["wall_time_s"]
    print(f"{args.rows} rows in {summary['wall_time_s']:.1f} s: {achieved:.1f} rows/s, "
          f"{achieved / (args.capacity / args.latency):.3f} of ideal; plot: {args.out}")


if __name__ == "__main__":
    main()
