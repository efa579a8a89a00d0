"""``--group-by-prefix`` on the real CPU vLLM server: rows sharing long few-shot prefixes.

GROUPS few-shot blocks (about 900 prompt tokens a row), ROWS_PER_GROUP questions each,
shuffled; max_tokens 8, so the prompts' prefill dominates. The server's KV cache is kept small
(1 GiB, ~46k tokens for the default model), as it is on a busy GPU, so cached prefixes are
evicted when the same block comes back much later. The same rows run in input order, then
grouped, then in input order again (the server's prefix cache reset before each); the table
gives wall time and the prefix cache hit rate from the server's /metrics.

    python benchmarks/prefix.py
    python benchmarks/prefix.py --servers 2 [--rounds N] [--distinct]
    python benchmarks/prefix.py --sweep [--groups N] [--shares 0.1,0.25,0.5]
    python benchmarks/prefix.py --check-cost [--rows N]

With ``--servers 2``: the same rows (input order) through two managed CPU replicas
(``--replicas 2``, a core each), prefix-affine routing (the default) against least-outstanding
(``--no-prefix-routing``), each also with ``--group-by-prefix``, alternated ``--rounds``
times; the sending phase's wall time and each server's prefix cache hit rate (its counters in
the run's timeline). With ``--distinct``, rows that share nothing (256 rows of about 350
prompt tokens, over 512 characters, so that every row has a routing key): prefix-affine against
least-outstanding, both with the default ``--group-by-prefix auto``, what affinity costs where
it cannot help.

With ``--sweep``: where ``--group-by-prefix auto`` should start grouping. Rows whose prompt is a
few-shot block shared by 8 rows (scattered; ``--groups`` blocks, 32 by default) and a part of
their own (about 1,250 prompt tokens a row in all), the block a growing share of the prompt;
each set run in input order and grouped; the table gives the share vbatch measures (grouped
against input order) and the speed-up grouping gives.

With ``--check-cost``: what ``auto`` adds to the check pass on rows that share nothing
(``--rows`` distinct prompts, a million by default; no server): the check pass with ``off``
and ``auto`` (its decision included), alternated five times, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import WORK, engine_env, reset_prefix_cache, served, vbatch_over_http
from harness import PYTHON, machine

GROUPS, ROWS_PER_GROUP, CONTEXT = 64, 8, 2048
DISTINCT_ROWS = 256
TOPICS = ["rivers", "volcanoes", "chess", "bread", "tides", "bees", "glaciers", "comets"]


def write_rows(path: Path) -> Path:
    rng = random.Random(7)
    rows = []
    for group in range(GROUPS):
        examples = " ".join(
            f"Example {k} of set {group}: Q: Tell me about {rng.choice(TOPICS)} number "
            f"{rng.randint(0, 10**6)}. A: They are {rng.choice(TOPICS)} of kind {k * group}."
            for k in range(24)
        )
        for question in range(ROWS_PER_GROUP):
            rows.append({"id": f"g{group}-q{question}", "messages": [
                {"role": "system", "content": f"Set {group}. Answer like the examples. {examples}"},
                {"role": "user", "content": f"Q: Tell me about {rng.choice(TOPICS)} {question}."},
            ]})
    rng.shuffle(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_sweep_rows(path: Path, share: float, groups: int = 32) -> Path:
    """Rows of about 3,600 prompt characters, ``share`` of them a block 8 rows share."""
    rng = random.Random(11)
    words = ["amber", "basalt", "cedar", "delta", "ember", "fjord", "garnet", "harbor"]

    def filler(length: int) -> str:
        text = ""
        while len(text) < length:
            text += f"{rng.choice(words)}-{rng.randint(0, 10**9)} "
        return text[:length]

    rows = []
    for group in range(groups):
        block = f"Set {group}. " + filler(int(1800 * share))
        for question in range(ROWS_PER_GROUP):
            rows.append({"id": f"g{group}-q{question}", "messages": [
                {"role": "system", "content": block},
                {"role": "user", "content": filler(int(1800 * (1 - share))) + " Summarise."}]})
    rng.shuffle(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_distinct_rows(path: Path) -> Path:
    """DISTINCT_ROWS chat rows of about 350 prompt tokens (over PREFIX_CHARS: each has a routing
    key) that share no prefix."""
    rng = random.Random(13)
    rows = []
    for i in range(DISTINCT_ROWS):
        text = " ".join(f"{rng.choice(TOPICS)}-{rng.randint(0, 10**6)}" for _ in range(48))
        rows.append({"id": f"d{i}", "messages": [
            {"role": "user", "content": f"Row {i} {rng.randint(0, 10**9)}: {text}. Summarise."}]})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def measured_sharing(source: Path) -> Any:
    from vbatch import RunConfig
    from vbatch.prepare.builder import RequestBuilder
    from vbatch.prepare.scan import scan_input
    from vbatch.settings import RequestSettings, SourceSettings

    config = RunConfig(input=source, output=Path(os.devnull), model="m", max_tokens=8)
    builder = RequestBuilder(RequestSettings.of(config), "m")
    scan = scan_input(SourceSettings(source, None, source, "id", "fail", "auto"), builder)
    assert scan.prefix_sample is not None
    return scan.prefix_sample.sharing()


def sweep(groups: int, shares: list[float]) -> None:
    env = {**engine_env(), "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    print("| shared block, share of the prompt | measured: grouped, input order | input order s "
          "| grouped s | speed-up |\n|---|---|---|---|---|")
    with served(WORK / "prefix-serve.log", env) as url:
        for share in shares:
            source = write_sweep_rows(WORK / f"prefix-sweep-{share}.jsonl", share, groups)
            sharing = measured_sharing(source)
            plain = one_run(url, source, "input", "--group-by-prefix", "off")
            grouped = one_run(url, source, "grouped", "--group-by-prefix", "on")
            print(f"| {share:.2f} | {sharing.grouped:.2f}, {sharing.in_input_order:.2f} | "
                  f"{plain['wall_s']:.1f} | {grouped['wall_s']:.1f} | "
                  f"{plain['wall_s'] / grouped['wall_s']:.2f}x |", flush=True)


def check_cost(rows: int) -> None:
    from vbatch import RunConfig
    from vbatch.prepare.builder import RequestBuilder
    from vbatch.prepare.scan import scan_input
    from vbatch.settings import RequestSettings, SourceSettings

    rng = random.Random(5)
    source = WORK / "prefix-distinct.jsonl"
    with open(source, "w") as handle:
        for i in range(rows):
            text = " ".join(f"{rng.choice(TOPICS)}{rng.randint(0, 10**6)}" for _ in range(40))
            handle.write(json.dumps({"id": f"r{i}", "messages": [
                {"role": "user", "content": f"Question {i}: {text}"}]}) + "\n")
    config = RunConfig(input=source, output=Path(os.devnull), model="m", max_tokens=8)
    builder = RequestBuilder(RequestSettings.of(config), "m")
    times: dict[str, list[float]] = {"off": [], "auto": []}
    for _ in range(5):
        for mode in times:
            started = time.perf_counter()
            scan = scan_input(SourceSettings(source, None, source, "id", "fail", mode), builder)
            if mode == "auto":
                assert scan.prefix_sample is not None
                assert not scan.prefix_sample.sharing().pays
            times[mode].append(time.perf_counter() - started)
    off, auto = (statistics.median(times[mode]) for mode in ("off", "auto"))
    ratios = [a / o - 1 for o, a in zip(times["off"], times["auto"], strict=True)]
    print(f"| {rows:,} distinct rows | check pass, off | check pass, auto | auto costs, per "
          f"round | median |\n|---|---|---|---|---|\n| median of 5 | {off:.2f} s | {auto:.2f} s "
          f"| {', '.join(f'{r:+.1%}' for r in ratios)} | {statistics.median(ratios):+.1%} |")


def prefix_counters(url: str) -> tuple[float, float]:
    text = urllib.request.urlopen(url.removesuffix("/v1") + "/metrics", timeout=30).read()
    values = {"vllm:prefix_cache_queries_total": 0.0, "vllm:prefix_cache_hits_total": 0.0}
    for line in text.decode().splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in values:
            values[name] += float(line.rsplit(" ", 1)[1])
    return values["vllm:prefix_cache_queries_total"], values["vllm:prefix_cache_hits_total"]


def one_run(url: str, source: Path, name: str, *extra: str) -> dict[str, Any]:
    reset_prefix_cache(url)
    queries, hits = prefix_counters(url)
    summary = vbatch_over_http(url, source, f"prefix-{name}", "--max-tokens", "8", *extra)
    queries_after, hits_after = prefix_counters(url)
    return {"order": name, "wall_s": summary["wall_time_s"], "rows": summary["rows_ok"],
            "prompt_tokens": summary["prompt_tokens"],
            "prefix_hit_rate": (hits_after - hits) / max(1.0, queries_after - queries)}


def replicas_run(source: Path, *extra: str) -> dict[str, Any]:
    """``vbatch run --replicas 2`` of ``source``: the sending phase and each server's hits."""
    out, stats = WORK / "prefix-replicas.jsonl", WORK / "prefix-replicas.stats.json"
    for stale in WORK.glob("prefix-replicas.jsonl*"):
        stale.unlink()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE",
                                                                   "1")}
    done = subprocess.run([PYTHON, "-m", "vbatch", "run", str(source), "-o", str(out),
                           "--replicas", "2", "--max-model-len", "2048", "--max-tokens", "8",
                           "--temperature", "0", "--quiet", "--stats-json", str(stats), *extra],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    summary = json.loads(stats.read_text())
    ticks = [json.loads(line) for line in
             Path(str(out) + ".timeline.jsonl").read_text().splitlines()]
    last = [tick for tick in ticks if tick.get("servers")][-1]
    rates = [s["prefix_hits"] / max(1.0, s["prefix_queries"]) for s in last["servers"]]
    return {"wall_s": summary["wall_time_s"], "rows": summary["rows_ok"], "hit_rates": rates,
            "requests": [e["requests"] for e in summary["endpoints"]]}


def two_servers(source: Path, rounds: int, distinct: bool) -> None:
    variants: dict[str, tuple[str, ...]] = {
        "prefix-affine": ("--group-by-prefix", "off"),
        "least outstanding (--no-prefix-routing)": ("--no-prefix-routing", "--group-by-prefix",
                                                    "off"),
        "prefix-affine, grouped (the defaults)": (),
        "least outstanding, grouped": ("--no-prefix-routing", "--group-by-prefix", "on")}
    if distinct:
        variants = {"prefix-affine (the defaults)": (),
                    "least outstanding (--no-prefix-routing)": ("--no-prefix-routing",)}
    runs: dict[str, list[dict[str, Any]]] = {}
    for round_number in range(1, rounds + 1):
        for name, extra in variants.items():
            run = replicas_run(source, *extra)
            runs.setdefault(name, []).append(run)
            print(f"round {round_number}: {name}: {run}", flush=True)
    base = statistics.median(r["wall_s"] for r in runs["least outstanding (--no-prefix-routing)"])
    rows = f"{DISTINCT_ROWS} distinct rows" if distinct else f"{GROUPS * ROWS_PER_GROUP} rows"
    print(f"\n| two replicas, {rows} (median of {rounds}) | sending s | "
          f"prefix hit rate per server | requests per server | speed-up |\n|---|---|---|---|---|")
    for name, samples in runs.items():
        wall = statistics.median(r["wall_s"] for r in samples)
        rates = ", ".join(f"{r:.2f}" for r in samples[-1]["hit_rates"])
        print(f"| {name} | {wall:.1f} | {rates} | {samples[-1]['requests']} | "
              f"{base / wall:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", type=int, choices=(1, 2), default=1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--check-cost", action="store_true")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--distinct", action="store_true")
    parser.add_argument("--groups", type=int, default=32, help="--sweep: blocks, 8 rows each")
    parser.add_argument("--shares", default="0.1,0.25,0.5", help="--sweep: the block's shares")
    args = parser.parse_args()
    print(machine(), flush=True)
    WORK.mkdir(exist_ok=True)
    if args.check_cost:
        check_cost(args.rows)
        return
    if args.sweep:
        sweep(args.groups, [float(share) for share in args.shares.split(",")])
        return
    if args.servers == 2:
        source = (write_distinct_rows(WORK / "prefix-distinct-rows.jsonl") if args.distinct
                  else write_rows(WORK / "prefix-rows.jsonl"))
        two_servers(source, args.rounds, args.distinct)
        return
    source = write_rows(WORK / "prefix-rows.jsonl")
    env = {**engine_env(), "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with served(WORK / "prefix-serve.log", env) as url:
        rows = [one_run(url, source, "input", "--group-by-prefix", "off"),
                one_run(url, source, "grouped", "--group-by-prefix", "on"),
                one_run(url, source, "auto"),
                one_run(url, source, "input-again", "--group-by-prefix", "off")]
    baseline = (rows[0]["wall_s"] + rows[3]["wall_s"]) / 2
    print(f"{'order':>12} | {'rows':>5} | {'prompt tok':>10} | {'wall_s':>7} | "
          f"{'prefix hits':>11} | {'speed-up':>8}")
    for row in rows:
        row["speedup_vs_input_order"] = baseline / row["wall_s"]
        print(f"{row['order']:>12} | {row['rows']:5d} | {row['prompt_tokens']:10d} | "
              f"{row['wall_s']:7.1f} | {row['prefix_hit_rate']:11.3f} | "
              f"{row['speedup_vs_input_order']:8.2f}")
    (WORK / "prefix.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
