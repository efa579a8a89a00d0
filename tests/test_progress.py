"""Progress and statistics, with an injected clock."""

from __future__ import annotations

import io
import json

from vbatch.engine.progress import Progress
from vbatch.engine.stats import LatencyHistogram, RunStats


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ok(tokens: int = 10, latency: float = 0.5) -> dict[str, object]:
    return {"status": "ok", "usage": {"prompt_tokens": 5, "completion_tokens": tokens},
            "latency_s": latency}


def test_rates_and_eta_from_the_clock() -> None:
    clock = FakeClock()
    stats = RunStats(clock=clock, total_rows=1000, already_done=100)
    progress = Progress(stats, io.StringIO(), mode="log")
    stats.start()
    progress.tick()
    for _ in range(50):
        stats.add(ok())
    clock.now += 10
    snap = progress.tick()
    assert snap.done == 150 and snap.total == 1000
    assert snap.rows_per_s == 5.0
    assert snap.tokens_per_s == 50.0
    assert snap.eta_s == 170.0
    assert Progress.format(snap) == (
        "150/1000 rows (15%) | 5.0 rows/s | 50 tok/s | 0 failed | elapsed 10.0 s | ETA 2m50s"
    )


def test_rate_window_forgets_old_samples() -> None:
    clock = FakeClock()
    stats = RunStats(clock=clock, total_rows=10_000)
    progress = Progress(stats, io.StringIO(), mode="quiet")
    for _ in range(20):
        for _ in range(100):
            stats.add(ok())
        clock.now += 5
        progress.tick()
    for _ in range(10):
        for _ in range(10):
            stats.add(ok())
        clock.now += 5
        snap = progress.tick()
    assert snap.rows_per_s is not None and 2.0 <= snap.rows_per_s <= 8.0


def test_log_mode_writes_periodic_lines_and_bar_mode_redraws() -> None:
    clock = FakeClock()
    stats = RunStats(clock=clock, total_rows=10)
    stream = io.StringIO()
    progress = Progress(stats, stream, mode="log", log_interval_s=10)
    progress.render()
    clock.now += 3
    progress.render()
    clock.now += 8
    progress.render()
    assert stream.getvalue().count("\n") == 2
    json_stream = io.StringIO()
    as_json = Progress(stats, json_stream, mode="json", log_interval_s=10)
    stats.add(ok())
    as_json.render()
    line = json.loads(json_stream.getvalue())
    assert line["event"] == "progress" and line["done"] == 1 and line["total"] == 10


def test_summary_counts_failures_by_reason() -> None:
    clock = FakeClock()
    stats = RunStats(clock=clock, total_rows=3)
    stats.start()
    stats.add(ok(tokens=7))
    for _ in range(2):
        stats.add({"status": "failed", "usage": None, "latency_s": 1.0,
                   "error": {"type": "http_error", "status_code": 400, "message": "bad"}})
    clock.now += 2
    stats.finish()
    data = stats.to_dict()
    assert data["rows_ok"] == 1 and data["rows_failed"] == 2
    assert data["completion_tokens_per_s"] == 3.5
    assert data["failures"] == {"http_error (HTTP 400)": {"count": 2, "example": "bad"}}
    assert "failed: 2 x http_error (HTTP 400): bad" in stats.summary_text()


def test_latency_quantiles_within_two_percent() -> None:
    histogram = LatencyHistogram()
    for i in range(1, 1001):
        histogram.add(i / 100)
    for q, exact in ((0.5, 5.0), (0.95, 9.5), (0.99, 9.9)):
        value = histogram.quantile(q)
        assert value is not None and abs(value - exact) / exact <= 0.02
    assert LatencyHistogram().quantile(0.5) is None
