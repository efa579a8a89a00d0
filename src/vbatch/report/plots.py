"""The report's plots, drawn with matplotlib (its object API: no global state). Each takes the
report data and returns a figure, or None when the run has nothing to show for it (no timeline,
no failures, ...)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vbatch.report.data import ReportData, Segment

__all__ = ["PLOTS", "Plot"]

_SIZE = (8.0, 3.2)
_SMOOTH = 5


@dataclass(frozen=True)
class Plot:
    """A plot of the report: its file name, title, caption and how to draw it."""

    name: str
    title: str
    caption: str
    draw: Callable[[ReportData], Figure | None]


def _figure(ylabel: str, xlabel: str = "time (s)") -> tuple[Figure, Any]:
    figure = Figure(figsize=_SIZE, layout="constrained")
    axes = figure.subplots()
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def _times(data: ReportData, segment: Segment) -> np.ndarray:
    offset = segment.started - data.segments[0].started
    return np.asarray([offset + s["t"] for s in segment.samples], dtype=np.float64)


def _series(segment: Segment, value: Callable[[dict[str, Any]], float | None]) -> np.ndarray:
    return np.asarray([np.nan if (v := value(s)) is None else v for s in segment.samples],
                      dtype=np.float64)


def _rate(times: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-second rate of a counter, smoothed over a few samples."""
    if times.size < 2:
        return times[:0], counts[:0]
    spans = np.diff(times)
    rates = np.divide(np.diff(counts), spans, out=np.zeros(spans.size), where=spans > 0)
    if rates.size >= _SMOOTH:
        rates = np.convolve(rates, np.ones(_SMOOTH) / _SMOOTH, mode="same")
    return times[1:], rates


def _mark_segments(data: ReportData, axes: Any) -> None:
    for segment in data.segments[1:]:
        axes.axvline(segment.started - data.segments[0].started, color="grey", ls=":", lw=1)


def _server_total(sample: dict[str, Any], name: str) -> float | None:
    values = [s[name] for s in sample["servers"] if s.get(name) is not None]
    return float(sum(values)) if values else None


def throughput(data: ReportData) -> Figure | None:
    if not data.segments:
        return None
    figure, axes = _figure("rows/s")
    tokens = axes.twinx()
    tokens.set_ylabel("tokens/s")
    for i, segment in enumerate(data.segments):
        times = _times(data, segment)
        label = i == 0
        axes.plot(*_rate(times, _series(segment, lambda s: s["rows_done"])), color="C0",
                  label="rows/s" if label else None)
        tokens.plot(*_rate(times, _series(segment, lambda s: s["completion_tokens"])),
                    color="C1", label="tokens/s (finished rows)" if label else None)
        generated = _series(segment, lambda s: _server_total(s, "generation_tokens"))
        if not np.all(np.isnan(generated)):
            tokens.plot(*_rate(times, generated), color="C2", ls="--",
                        label="tokens/s (server /metrics)" if label else None)
    _mark_segments(data, axes)
    handles = axes.get_legend_handles_labels()[0] + tokens.get_legend_handles_labels()[0]
    axes.legend(handles=handles, loc="upper left", fontsize="small")
    return figure


def concurrency(data: ReportData) -> Figure | None:
    if not data.segments:
        return None
    figure, axes = _figure("requests")
    for i, segment in enumerate(data.segments):
        times = _times(data, segment)
        first = i == 0
        axes.plot(times, _series(segment, lambda s: s["in_flight"]), color="C0",
                  label="in flight (vbatch)" if first else None)
        axes.plot(times, _series(segment, lambda s: s["bound"]), color="C3", ls="--",
                  label="concurrency bound" if first else None)
        axes.plot(times, _series(segment, lambda s: _server_total(s, "running")), color="C2",
                  label="running (server)" if first else None)
        axes.plot(times, _series(segment, lambda s: _server_total(s, "waiting")), color="C1",
                  label="waiting (server)" if first else None)
    _mark_segments(data, axes)
    axes.legend(loc="upper right", fontsize="small")
    return figure


def _per_server(data: ReportData, name: str, ylabel: str, scale: float = 1.0) -> Figure | None:
    if not data.segments:
        return None
    urls = list(dict.fromkeys(s["url"] for seg in data.segments for sample in seg.samples
                              for s in sample["servers"]))
    figure, axes = _figure(ylabel)
    for color, url in enumerate(urls):
        def value(sample: dict[str, Any], url: str = url) -> float | None:
            return next((x[name] * scale for x in sample["servers"]
                         if x["url"] == url and x.get(name) is not None), None)

        for i, segment in enumerate(data.segments):
            axes.plot(_times(data, segment), _series(segment, value), color=f"C{color}",
                      label=url if i == 0 else None)
    _mark_segments(data, axes)
    if urls:
        axes.legend(loc="upper right", fontsize="small")
    return figure


def kv_cache(data: ReportData) -> Figure | None:
    return _per_server(data, "kv_usage", "KV-cache use (%)", 100.0)


def server_running(data: ReportData) -> Figure | None:
    return _per_server(data, "running", "requests running")


def latency(data: ReportData) -> Figure | None:
    if data.latency_s.size == 0:
        return None
    figure, axes = _figure("rows", "latency (s)")
    axes.hist(data.latency_s, bins=50, color="C0")
    for q, style in ((50, "-"), (95, "--"), (99, ":")):
        value = float(np.percentile(data.latency_s, q))
        axes.axvline(value, color="C3", ls=style, label=f"p{q} {value:.2f} s")
    axes.legend(loc="upper right", fontsize="small")
    return figure


def tokens(data: ReportData) -> Figure | None:
    if data.prompt_tokens.size == 0 and data.completion_tokens.size == 0:
        return None
    figure, axes = _figure("rows", "tokens per row")
    for values, label, color in ((data.prompt_tokens, "prompt", "C0"),
                                 (data.completion_tokens, "completion", "C1")):
        if values.size:
            axes.hist(values, bins=50, alpha=0.6, color=color,
                      label=f"{label} (median {int(np.median(values))})")
    axes.legend(loc="upper right", fontsize="small")
    return figure


def failures(data: ReportData) -> Figure | None:
    kinds = list(dict.fromkeys(kind for segment in data.segments
                               for sample in segment.samples for kind in sample["failures"]))
    if not kinds:
        return None
    figure, axes = _figure("failed rows (cumulative)")
    for color, kind in enumerate(kinds):
        def count(sample: dict[str, Any], kind: str = kind) -> float | None:
            return float(sample["failures"].get(kind, 0))

        for i, segment in enumerate(data.segments):
            axes.plot(_times(data, segment), _series(segment, count), color=f"C{color}",
                      label=kind if i == 0 else None)
    _mark_segments(data, axes)
    axes.legend(loc="upper left", fontsize="small")
    return figure


def finish_reasons(data: ReportData) -> Figure | None:
    if not data.finish_reasons:
        return None
    figure, axes = _figure("rows", "finish reason")
    names = sorted(data.finish_reasons, key=lambda n: -data.finish_reasons[n])
    bars = axes.bar(names, [data.finish_reasons[n] for n in names],
                    color=["C3" if n == "length" else "C0" for n in names])
    axes.bar_label(bars)
    return figure


PLOTS = (
    Plot("throughput", "Throughput", "Rows/s and tokens/s over time; the dashed line is what "
         "the servers generated (their /metrics), which moves while long requests run.",
         throughput),
    Plot("concurrency", "In flight and the server's queue", "Requests vbatch had in flight, "
         "its concurrency bound, and what the servers ran and queued.", concurrency),
    Plot("servers", "Per server: requests running", "One line per endpoint.", server_running),
    Plot("kv_cache", "KV-cache use", "Per server; near 100% the server preempts requests.",
         kv_cache),
    Plot("latency", "Latency", "Seconds from a row's first send to its record, with p50, p95 "
         "and p99.", latency),
    Plot("tokens", "Tokens per row", "Prompt and completion tokens (the server's counts).",
         tokens),
    Plot("failures", "Failures by reason over time", "Cumulative failed rows per kind.",
         failures),
    Plot("finish_reasons", "Finish reasons", "Why generation stopped; many 'length' rows mean "
         "max_tokens cut answers short: raise --max-tokens.", finish_reasons),
)
