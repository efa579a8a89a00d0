"""``make bench``: vbatch against the baseline (benchmarks/baseline_openai.py) in one run.

    python benchmarks/run.py [imports] [overhead] [api] [memory] [batch-memory] [saturation]
                             [endpoints] [ray] [--quick]

Prints one table with ratios and writes bench-results/results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    PYTHON,
    ROOT,
    Simulator,
    baseline_command,
    machine,
    measure,
    vbatch_command,
    write_prompts,
)

WORK = ROOT / "bench-results"


def _median_wall_s(command: list[str], repeats: int) -> float:
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def imports(repeats: int) -> list[dict[str, Any]]:
    """Wall time of ``import vbatch`` and ``vbatch --help`` (median of ``repeats`` fresh
    interpreters), against the bare interpreter's start measured alongside."""
    commands = (("python -c pass (baseline)", [PYTHON, "-c", "pass"]),
                ("import vbatch", [PYTHON, "-c", "import vbatch"]),
                ("vbatch --help", [PYTHON, "-m", "vbatch", "--help"]),
                ("import vbatch; vbatch.run", [PYTHON, "-c", "import vbatch; vbatch.run"]))
    rows = [{"bench": "imports", "client": name, "wall_s": _median_wall_s(command, repeats)}
            for name, command in commands]
    for row in rows:
        row["ratio_to_baseline"] = row["wall_s"] / rows[0]["wall_s"]
    return rows


def overhead(requests: int) -> list[dict[str, Any]]:
    """Client CPU per request against a zero-latency simulator on the other core."""
    source = write_prompts(WORK / f"prompts-{requests}.jsonl", requests)
    with Simulator("--completion-tokens", "8") as sim:
        return _cpu_per_request("overhead", requests, (
            ("baseline", baseline_command(source, WORK / "baseline.out", sim.url)),
            ("vbatch", vbatch_command(source, WORK / "vbatch.out", sim.url,
                                      "--concurrency", "256")),
        ))


def _cpu_per_request(bench: str, requests: int, commands: tuple[tuple[str, list[str]], ...]
                     ) -> list[dict[str, Any]]:
    """Each command measured: requests/s, client CPU per request, peak RSS, and its CPU
    against the first command's (the baseline)."""
    rows = []
    for name, command in commands:
        m = measure(command)
        rows.append({"bench": bench, "client": name, "requests": requests,
                     "requests_per_s": requests / m.wall_s,
                     "cpu_ms_per_request": 1000 * m.cpu_s / requests,
                     "peak_rss_mb": m.peak_rss_mb})
    for row in rows:
        row["ratio_to_baseline"] = row["cpu_ms_per_request"] / rows[0]["cpu_ms_per_request"]
    return rows


def api(requests: int, streamed: int) -> list[dict[str, Any]]:
    """The Python API: ``vbatch.generate`` on a list against the baseline's script (the same
    prompts, read into a list), client CPU per request; then ``vbatch.stream`` over a
    generator of ``streamed`` prompts, its peak RSS against a tenth of them."""
    source = write_prompts(WORK / f"prompts-{requests}.jsonl", requests)
    script = str(ROOT / "benchmarks" / "api_client.py")
    with Simulator("--completion-tokens", "8") as sim:
        rows = _cpu_per_request("api", requests, (
            ("baseline", baseline_command(source, WORK / "baseline.out", sim.url)),
            ("vbatch.generate", [PYTHON, script, "generate", str(source), sim.url]),
        ))
        streams = []
        for count in (streamed // 10, streamed):
            m = measure([PYTHON, script, "stream", str(count), sim.url])
            streams.append({"bench": "api", "client": "vbatch.stream (generator)",
                            "requests": count, "requests_per_s": count / m.wall_s,
                            "peak_rss_mb": m.peak_rss_mb})
        for row in streams:
            row["ratio_to_smallest"] = row["peak_rss_mb"] / streams[0]["peak_rss_mb"]
    return rows + streams


BASELINE_MEMORY_S = 30.0


def memory(sizes: list[int]) -> list[dict[str, Any]]:
    """Peak RSS as the row count grows: flat for vbatch, growing for the baseline.

    The baseline would need over an hour for a million rows at its ~270 requests/s, so it
    runs for 30 s: by then it has read every row and created every task, its peak.
    """
    rows = []
    with Simulator("--completion-tokens", "2") as sim:
        for size in sizes:
            source = write_prompts(WORK / f"prompts-{size}.jsonl", size)
            m = measure(baseline_command(source, WORK / "baseline.out", sim.url),
                        kill_after=BASELINE_MEMORY_S)
            rows.append({"bench": "memory", "client": "baseline (first 30 s)", "requests": size,
                         "peak_rss_mb": m.peak_rss_mb, "wall_s": m.wall_s})
        for size in sizes:
            source = write_prompts(WORK / f"prompts-{size}.jsonl", size)
            m = measure(vbatch_command(source, WORK / "vbatch.out", sim.url))
            rows.append({"bench": "memory", "client": "vbatch", "requests": size,
                         "peak_rss_mb": m.peak_rss_mb, "wall_s": m.wall_s})
    for client in ("baseline (first 30 s)", "vbatch"):
        mine = [r for r in rows if r["client"] == client]
        for row in mine:
            row["ratio_to_smallest"] = row["peak_rss_mb"] / mine[0]["peak_rss_mb"]
    return rows


def write_embedding_batch(path: Path, count: int) -> Path:
    """An OpenAI Batch file of ``count`` embedding lines."""
    if not path.exists():
        with open(path, "w") as handle:
            for i in range(count):
                handle.write(json.dumps({"custom_id": f"request-{i}", "method": "POST",
                                         "url": "/v1/embeddings",
                                         "body": {"model": "sim-model",
                                                  "input": f"document {i} to embed"}}) + "\n")
    return path


def batch_memory(sizes: list[int]) -> list[dict[str, Any]]:
    """Peak RSS of ``vbatch run-batch`` on embedding batch files of growing size, against the
    simulator: flat (vLLM's run-batch holds every result until the end: vllm#30268)."""
    rows = []
    with Simulator() as sim:
        for size in sizes:
            source = write_embedding_batch(WORK / f"embed-batch-{size}.jsonl", size)
            target = WORK / "embed-batch.out.jsonl"
            journal = Path(f"{target}.journal.jsonl")
            for stale in (target, journal, Path(f"{journal}.manifest.json")):
                stale.unlink(missing_ok=True)
            m = measure([PYTHON, "-m", "vbatch", "run-batch", "-i", str(source), "-o",
                         str(target), "--base-url", sim.url, "--quiet"])
            with open(target) as handle:
                lines = sum(1 for _ in handle)
            assert lines == size, f"{lines} output lines for {size} requests"
            rows.append({"bench": "batch-memory", "client": "vbatch run-batch (embeddings)",
                         "requests": size, "requests_per_s": size / m.wall_s,
                         "peak_rss_mb": m.peak_rss_mb, "wall_s": m.wall_s})
    for row in rows:
        row["ratio_to_smallest"] = row["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    return rows


def saturation(requests: int, capacity: int, latency: float) -> list[dict[str, Any]]:
    """Throughput against a server of fixed capacity, over the ideal capacity / latency."""
    source = write_prompts(WORK / f"prompts-{requests}.jsonl", requests)
    ideal = capacity / latency
    rows = []
    with Simulator("--capacity", str(capacity), "--latency", str(latency),
                   "--completion-tokens", "8") as sim:
        for name, command in (
            ("baseline", baseline_command(source, WORK / "baseline.out", sim.url)),
            ("vbatch", vbatch_command(source, WORK / "vbatch.out", sim.url,
                                      "--concurrency", str(capacity * 2))),
        ):
            m = measure(command)
            achieved = requests / m.wall_s
            rows.append({"bench": "saturation", "client": name, "requests": requests,
                         "requests_per_s": achieved, "ratio_to_ideal": achieved / ideal})
    return rows


def _one_endpoint_then_two(names: tuple[str, str], requests: int, capacity: int,
                           latency: float, *flags: str) -> list[tuple[str, Any, dict[str, Any]]]:
    """vbatch over one simulated endpoint, then over two: (name, measurement, --stats-json)."""
    source = write_prompts(WORK / f"prompts-{requests}.jsonl", requests)
    stats = WORK / "two-endpoints-stats.json"
    runs = []
    args = ("--capacity", str(capacity), "--latency", str(latency))
    with Simulator(*args) as one, Simulator(*args) as two:
        for name, urls in zip(names, ([one.url], [one.url, two.url]), strict=True):
            extra = [arg for url in urls[1:] for arg in ("--base-url", url)]
            m = measure(vbatch_command(source, WORK / "vbatch.out", urls[0], *extra, *flags,
                                       "--stats-json", str(stats)))
            runs.append((name, m, json.loads(stats.read_text())))
    return runs


def _ratios_to_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        row["ratio_to_baseline"] = row["requests_per_s"] / rows[0]["requests_per_s"]
    return rows


def endpoints(requests: int, capacity: int, latency: float) -> list[dict[str, Any]]:
    """Throughput over one simulated endpoint, then over two: the ratio should be near 2."""
    runs = _one_endpoint_then_two(("vbatch, 1 endpoint", "vbatch, 2 endpoints"), requests,
                                  capacity, latency)
    return _ratios_to_first([
        {"bench": "endpoints", "client": name, "requests": requests,
         "requests_per_s": requests / m.wall_s}
        for name, m, _ in runs
    ])


def ray_workers(requests: int, capacity: int, latency: float) -> list[dict[str, Any]]:
    """``--ray`` on a local cluster: one worker on one endpoint, then two over two endpoints.

    ``requests_per_s`` counts from the first shard handed out (the run's --stats-json);
    ``wall_s`` includes starting Ray and the workers.
    """
    runs = _one_endpoint_then_two(("vbatch --ray, 1 worker, 1 endpoint",
                                   "vbatch --ray, 2 workers, 2 endpoints"), requests, capacity,
                                  latency, "--ray")
    return _ratios_to_first([
        {"bench": "ray", "client": name, "requests": requests,
         "requests_per_s": stats["rows_per_s"], "wall_s": m.wall_s}
        for name, m, stats in runs
    ])


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = ["bench", "client", "requests", "requests_per_s", "cpu_ms_per_request",
               "peak_rss_mb", "wall_s", "ratio_to_baseline", "ratio_to_smallest",
               "ratio_to_ideal"]
    used = [c for c in columns if any(c in r for r in rows)]
    print(" | ".join(f"{c:>18}" for c in used))
    for row in rows:
        cells = []
        for column in used:
            value = row.get(column, "")
            cells.append(f"{value:>18.3f}" if isinstance(value, float) else f"{value!s:>18}")
        print(" | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("benches", nargs="*",
                        default=["imports", "overhead", "api", "memory", "batch-memory",
                                 "saturation", "endpoints", "ray"])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    print(machine(), flush=True)
    rows: list[dict[str, Any]] = []
    if "imports" in args.benches:
        rows += imports(5 if args.quick else 15)
    if "overhead" in args.benches:
        rows += overhead(5_000 if args.quick else 50_000)
    if "api" in args.benches:
        rows += api(5_000 if args.quick else 50_000, 100_000 if args.quick else 1_000_000)
    if "memory" in args.benches:
        rows += memory([10_000, 100_000] if args.quick else [100_000, 1_000_000])
    if "batch-memory" in args.benches:
        rows += batch_memory([10_000, 100_000] if args.quick else [100_000, 1_000_000])
    if "saturation" in args.benches:
        rows += saturation(2_000 if args.quick else 20_000, 256, 2.0)
    if "endpoints" in args.benches:
        rows += endpoints(2_000 if args.quick else 8_000, 64, 0.5)
    if "ray" in args.benches:
        rows += ray_workers(2_000 if args.quick else 8_000, 64, 0.5)
    print_table(rows)
    (WORK / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"\nwritten to {WORK / 'results.json'}")


if __name__ == "__main__":
    main()
