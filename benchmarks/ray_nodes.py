"""Ray on several nodes: rows/s with one worker node and with two, and what handing out one
shard costs the run.

    python benchmarks/ray_nodes.py [--rows N] [--rounds R]

A cluster on this machine (``ray.cluster_utils.Cluster``, as Ray tests itself): a head with
no CPU for actors and two worker nodes of one CPU each, so that each worker (one actor, one
``--base-url``) runs on a node of its own. The server is the simulator, 50 ms per answer and
room for 64 at a time, and each worker keeps a fixed 16 requests in flight: a worker's rate is
bound by the answers' latency, not by this machine's two cores, so what is measured is the
hand-out, not the CPU.

1. Rows/s of the sending phase (the run's own ``rows_per_s``) with one worker (on one node)
   and with two (one on each node), rounds alternated; the ratio of their medians.
2. The cost of one shard: one worker, the same rows in shards of 25 rows and of 1,000 rows;
   (sending time with small shards - with large) / (the extra shards), in ms per shard.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Simulator, machine

NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}
LATENCY_S = 0.05
IN_FLIGHT = 16


def write_rows(path: Path, count: int) -> Path:
    with open(path, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({"id": f"r{i}", "prompt": f"question {i}"}) + "\n")
    return path


def sending(source: Path, work: Path, url: str, workers: int, shard_rows: int) -> tuple[float,
                                                                                       float]:
    """Rows/s and seconds of the sending phase of one ``--ray`` run."""
    from vbatch import RunConfig, run

    out = work / f"out-{workers}-{shard_rows}.jsonl"
    for stale in work.glob(out.name + "*"):
        stale.unlink()
    result = run(RunConfig(input=source, output=out, base_url=url, max_tokens=2, ray=True,
                           replicas=workers, shard_rows=shard_rows, concurrency=IN_FLIGHT,
                           group_by_prefix="off"), stream=io.StringIO())
    if result.exit_code != 0 or result.stats.ok != result.stats.total_rows:
        raise RuntimeError(f"the run failed: exit {result.exit_code}, {result.stats.ok} ok")
    elapsed = result.stats.elapsed
    return result.stats.done / elapsed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=6_000, help="rows of each run")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of each")
    args = parser.parse_args()
    print(machine(), flush=True)

    import ray
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, connect=True,
                    head_node_args={**NODE, "num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        nodes.add_node(**NODE)
    nodes.wait_for_nodes()
    try:
        with tempfile.TemporaryDirectory() as folder, Simulator(
                "--latency", str(LATENCY_S), "--capacity", "64", "--completion-tokens", "2",
                cpu=None) as sim:
            work = Path(folder)
            source = write_rows(work / "in.jsonl", args.rows)
            shard_rows = args.rows // 16
            rates: dict[int, list[float]] = {1: [], 2: []}
            seconds: dict[int, list[float]] = {25: [], 1000: []}
            for _ in range(args.rounds):
                for workers in (1, 2):
                    rates[workers].append(sending(source, work, sim.url, workers,
                                                  shard_rows)[0])
                for rows in (25, 1000):
                    seconds[rows].append(sending(source, work, sim.url, 1, rows)[1])
    finally:
        ray.shutdown()
        nodes.shutdown()
    report(args.rows, shard_rows, rates, seconds)


def report(rows: int, shard_rows: int, rates: dict[int, list[float]],
           seconds: dict[int, list[float]]) -> None:
    one, two = (statistics.median(rates[n]) for n in (1, 2))
    bound = IN_FLIGHT / LATENCY_S
    print(f"\n| {rows} rows, shards of {shard_rows}, {IN_FLIGHT} in flight per worker, "
          f"{LATENCY_S * 1000:.0f} ms per answer | rows/s (median; rounds) | speed-up |\n"
          "|---|---|---|")
    for count, median in ((1, one), (2, two)):
        rounds = ", ".join(f"{rate:.0f}" for rate in rates[count])
        print(f"| {count} worker node{'s' if count > 1 else ''} "
              f"(bound {bound * count:.0f} rows/s) | {median:.0f} ({rounds}) | "
              f"{median / one:.2f}x |")
    small, large = (statistics.median(seconds[n]) for n in (25, 1000))
    extra = -(-rows // 25) - -(-rows // 1000)
    print(f"\n| one worker, {rows} rows | sending s (median; rounds) |\n|---|---|")
    for count in (25, 1000):
        rounds = ", ".join(f"{value:.2f}" for value in seconds[count])
        print(f"| shards of {count} rows ({-(-rows // count)} shards) | "
              f"{statistics.median(seconds[count]):.2f} ({rounds}) |")
    print(f"\nhand-out cost: {(small - large) / extra * 1000:.1f} ms per shard "
          f"({extra} extra shards)")


if __name__ == "__main__":
    main()
