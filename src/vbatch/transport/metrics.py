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


@dataclass(frozen=True)
class ServerLoad:
    """What the server's metrics say, summed over its engines."""

    running: float
    waiting: float
    kv_usage: float | None
    preemptions: float | None


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
    return ServerLoad(running, waiting, highest(KV_USAGE), total(PREEMPTIONS))
