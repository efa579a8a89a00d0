"""Progress and statistics, with an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from pathlib import Path

from vbatch.engine.progress import Progress, show_check
from vbatch.engine.stats import LatencyHistogram, RunStats
from vbatch.prepare.scan import CheckCount
from vbatch.servers.process import startup_note


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


def test_the_wall_time_covers_the_whole_command_by_phase() -> None:
    clock = FakeClock()
    stats = RunStats(clock=clock, total_rows=1, command_started=clock.now,
                     phases={"check": 4.0, "server start": 40.0})
    clock.now += 44
    stats.start()
    stats.add(ok())
    clock.now += 10
    stats.finish()
    stats.phases["writing"] = 1.5
    clock.now += 1.5
    assert "wall time: 55.5 s (check 4.0 s, server start 40.0 s, sending 10.0 s, writing " \
           "1.5 s)" in stats.summary_text()


def test_a_run_that_sent_nothing_has_no_rates() -> None:
    clock = FakeClock()
    stats = RunStats(clock=clock, total_rows=20, already_done=20)
    stats.start()
    clock.now += 1
    stats.finish()
    assert stats.to_dict()["rows_per_s"] is None
    assert "rows/s" not in stats.summary_text()


def test_the_check_shows_its_progress_once_it_takes_a_second() -> None:
    checked = CheckCount()
    stream = io.StringIO()

    async def check() -> None:
        watcher = asyncio.create_task(show_check(checked, "big.jsonl", stream, "log", 0.2,
                                                 time.monotonic))
        for _ in range(30):
            checked.rows += 1000
            await asyncio.sleep(0.05)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    asyncio.run(check())
    lines = stream.getvalue().splitlines()
    assert 1 <= len(lines) <= 4 and lines[0].startswith("vbatch: checking big.jsonl: ")
    assert lines[-1].endswith("rows/s)") and int(lines[-1].split(": ")[2].split()[0]) > 10_000


def test_the_server_start_shows_its_last_log_message(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "(EngineCore pid=12) INFO 11-30 18:16:23 [cpu_model_runner.py:68] Starting to load "
        "model /models/SmolLM2...\n"
        "(EngineCore pid=12) WARNING 11-30 18:16:23 [utils.py:333] Attempted to load weight\n"
        "Loading safetensors checkpoint shards: 100% Completed | 1/1\n"
        "  if hasattr(value, '__dict__'):\n")
    assert startup_note(log) == "Starting to load model /models/SmolLM2..."
    assert startup_note(tmp_path / "none.log") is None


def test_the_view_gives_each_server_a_line_while_the_terminal_has_room() -> None:
    from rich.console import Console

    from vbatch.engine.progress import ServerLine, Snapshot, _view

    servers = [ServerLine(f"http://gpu{i}:8000/v1", 10.0, 2.0, 0.5, 0.25) for i in range(12)]
    snapshot = Snapshot(5, 10, 0, 1.0, 100.0, 5.0, 5.0, 20, 32, {}, servers)
    for height, shown in ((40, 8), (8, 4)):
        console = Console(width=80, height=height, record=True, file=io.StringIO())
        console.print(_view(snapshot, 80, height))
        text = console.export_text()
        assert len(text.splitlines()) < height
        assert sum("http://gpu" in line for line in text.splitlines()) == shown
        assert sum("prefix hits 25%" in line for line in text.splitlines()) == shown
        assert f"and {12 - shown} more servers" in text
        assert all(len(line) <= 80 for line in text.splitlines())


def test_the_timeline_samples_less_often_as_a_run_grows_old() -> None:
    from vbatch.engine.timeline import sample_interval

    assert [sample_interval(s) for s in (0, 3599, 3600, 35_999, 36_000, 10**6)] == [
        1.0, 1.0, 10.0, 10.0, 60.0, 60.0]
