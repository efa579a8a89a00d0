"""vLLM's Prometheus ``/metrics`` page: the gauges that say how loaded a server is."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ServerLoad", "parse_metrics"]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+([-+0-9.eEinfNa]+)", re.M)
RUNNING = ("vllm:num_requests_running",)
WAITING = ("vllm:num_requests_waiting",)
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "vllm:cpu_cache_usage_perc")
PREEMPTIONS = ("vllm:num_preemptions_total", "vllm:num_preemptions")
PROMPT_TOKENS = ("vllm:prompt_tokens_total",)
GENERATION_TOKENS = ("vllm:generation_tokens_total",)
PREFIX_QUERIES = ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
PREFIX_HITS = ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")


@dataclass(frozen=True)
class ServerLoad:
    """What the server's metrics say, summed over its engines: the gauges (requests running
    and waiting, KV-cache use) and the counters since it started (preemptions, tokens, prefix
    cache queries and hits, in tokens), None where the server has none."""

    running: float
    waiting: float
    kv_usage: float | None
    preemptions: float | None
    prompt_tokens: float | None = None
    generation_tokens: float | None = None
    prefix_queries: float | None = None
    prefix_hits: float | None = None

    @property
    def prefix_hit_rate(self) -> float | None:
        """The share of prompt tokens found in the prefix cache since the server started."""
        if not self.prefix_queries or self.prefix_hits is None:
            return None
        return self.prefix_hits / self.prefix_queries

    @staticmethod
    def summed(loads: list[ServerLoad]) -> ServerLoad:
        """The load of several servers: gauges and counters added, the fullest KV cache."""
        def added(name: str) -> float | None:
            values = [getattr(x, name) for x in loads if getattr(x, name) is not None]
            return sum(values) if values else None

        kv = [x.kv_usage for x in loads if x.kv_usage is not None]
        return ServerLoad(
            running=sum(x.running for x in loads), waiting=sum(x.waiting for x in loads),
            kv_usage=max(kv) if kv else None, preemptions=added("preemptions"),
            prompt_tokens=added("prompt_tokens"), generation_tokens=added("generation_tokens"),
            prefix_queries=added("prefix_queries"), prefix_hits=added("prefix_hits"))


def parse_metrics(text: str) -> ServerLoad | None:
    """The load in a Prometheus text page, or None when it has no vLLM request gauges."""
    values: dict[str, list[float]] = {}
    for name, value in _SAMPLE.findall(text):
        try:
            values.setdefault(name, []).append(float(value))
        except ValueError:
            continue

    def total(names: tuple[str, ...]) -> float | None:
        for name in names:
            if name in values:
                return sum(values[name])
        return None

    def highest(names: tuple[str, ...]) -> float | None:
        for name in names:
            if name in values:
                return max(values[name])
        return None

    running, waiting = total(RUNNING), total(WAITING)
    if running is None or waiting is None:
        return None
    return ServerLoad(running, waiting, highest(KV_USAGE), total(PREEMPTIONS),
                      total(PROMPT_TOKENS), total(GENERATION_TOKENS), total(PREFIX_QUERIES),
                      total(PREFIX_HITS))
