"""The report page: a summary table and every plot, in one HTML file with the plots inlined
as PNG (no network, no script); with ``png_dir``, each plot as a PNG file too."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from vbatch.report.data import ReportData, load_report_data
from vbatch.report.plots import PLOTS

__all__ = ["build_report", "default_report_path"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
td, th { text-align: left; padding: 0.2em 1em 0.2em 0; border-bottom: 1px solid #ddd; }
figure { margin: 0 0 2em 0; } img { max-width: 100%; } figcaption { color: #555; }
"""


def default_report_path(output: Path) -> Path:
    """Where the report of ``output`` goes without ``-o``."""
    return output.with_name(output.name + ".report.html")


def _prefix_counts(data: ReportData) -> dict[str, tuple[float, float]]:
    """Each server's prefix-cache queries and hits during the runs (their counters' growth
    from each segment's first sample to its last), by URL."""
    counts: dict[str, tuple[float, float]] = {}
    for segment in data.segments:
        first, last = segment.samples[0]["servers"], segment.samples[-1]["servers"]
        for before, after in zip(first, last, strict=False):
            if None in (before.get("prefix_queries"), after.get("prefix_queries"),
                        before.get("prefix_hits"), after.get("prefix_hits")):
                continue
            queries, hits = counts.get(str(after.get("url")), (0.0, 0.0))
            counts[str(after.get("url"))] = (
                queries + after["prefix_queries"] - before["prefix_queries"],
                hits + after["prefix_hits"] - before["prefix_hits"])
    return counts


def _prefix_cache_line(data: ReportData) -> str | None:
    """The share of prompt tokens that were prefix-cache hits, and each server's when there
    are several."""
    counts = {url: qh for url, qh in _prefix_counts(data).items() if qh[0] > 0}
    queries = sum(q for q, _ in counts.values())
    if not queries:
        return None
    line = f"{sum(h for _, h in counts.values()) / queries:.0%} of prompt tokens were cache hits"
    if len(counts) > 1:
        line += " (" + ", ".join(f"{url}: {h / q:.0%}" for url, (q, h) in counts.items()) + ")"
    return line


def _summary(data: ReportData) -> list[tuple[str, str]]:
    generation = data.manifest.get("generation", {})
    total = sum(data.statuses.values())
    rows = [("output", str(data.output)),
            ("input", str(data.manifest.get("input", "?"))),
            ("model", str(generation.get("model") or "?")),
            ("endpoint", str(generation.get("endpoint") or "?")),
            ("rows", f"{data.statuses.get('ok', 0)} ok, {data.statuses.get('failed', 0)} "
                     f"failed, {total} in all")]
    if data.segments:
        seconds = sum(segment.samples[-1]["t"] for segment in data.segments)
        rows.append(("runs", f"{len(data.segments)} (resumed {len(data.segments) - 1} times), "
                             f"{seconds:.1f} s sending"))
    prefix_cache = _prefix_cache_line(data)
    if prefix_cache is not None:
        rows.append(("prefix cache", prefix_cache))
    rows.append(("tokens", f"{int(data.prompt_tokens.sum())} prompt, "
                           f"{int(data.completion_tokens.sum())} completion"))
    if data.latency_s.size:
        p50, p95, p99 = np.percentile(data.latency_s, [50, 95, 99])
        rows.append(("latency", f"p50 {p50:.3f} s, p95 {p95:.3f} s, p99 {p99:.3f} s"))
    if data.failures:
        rows.append(("failures", ", ".join(f"{n} x {kind}"
                                           for kind, n in data.failures.most_common())))
    if data.calls:
        rows_done = sum(data.statuses.values()) or 1
        replayed = (f", {data.calls_replayed} replayed from the calls journal"
                    if data.calls_replayed else "")
        rows.append(("program calls", f"{data.calls} ({data.calls / rows_done:.1f} per row)"
                                      f"{replayed}"))
    if data.invalid_answers:
        rows.append(("invalid answers", ", ".join(f"{n} {reason}" for reason, n
                                                  in data.invalid_answers.most_common())
                     + " (each asked again)"))
    if data.finish_reasons:
        rows.append(("finish reasons", ", ".join(f"{n} {reason}" for reason, n
                                                 in data.finish_reasons.most_common())))
    return rows


def build_report(output: Path, target: Path | None = None, png_dir: Path | None = None
                 ) -> tuple[Path, list[Path]]:
    """Write the report of ``output`` to ``target`` (default ``OUTPUT.report.html``) and, with
    ``png_dir``, each plot as a PNG there; returns the page and the PNG files."""
    data = load_report_data(output)
    target = target or default_report_path(output)
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    written: list[Path] = []
    for plot in PLOTS:
        figure = plot.draw(data)
        if figure is None:
            continue
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=96)
        png = buffer.getvalue()
        if png_dir is not None:
            path = png_dir / f"{plot.name}.png"
            path.write_bytes(png)
            written.append(path)
        encoded = base64.b64encode(png).decode()
        sections.append(
            f'<figure id="{plot.name}"><h2>{html.escape(plot.title)}</h2>'
            f'<img alt="{html.escape(plot.title)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>")
    if not data.segments:
        sections.append("<p>No timeline (OUTPUT.timeline.jsonl): this output was made before "
                        "vbatch kept one; plots over time are left out.</p>")
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                    for k, v in _summary(data))
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>vbatch report: {html.escape(output.name)}</title>"
            f"<style>{_STYLE}</style></head><body>"
            f"<h1>vbatch report: {html.escape(output.name)}</h1><table>{table}</table>"
            + "".join(sections) + "</body></html>\n")
    target.write_text(page)
    return target, written
