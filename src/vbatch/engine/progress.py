"""Live progress: a view redrawn in place on a terminal (rich), periodic log lines otherwise
(text, or JSON with ``--log-format json``).

Shown: rows done of all, elapsed, ETA, rows/s, generated tokens/s — from the servers'
``vllm:generation_tokens_total`` when they have ``/metrics``, so the rate moves while long
requests are still running; else from finished rows —, requests in flight and the bound,
the servers' running and waiting requests and KV-cache use (one line per server when there
are several), failures by kind. Rates are measured over a sliding window and the clock is
injected, so the figures are deterministic under test. Everything is driven by a timer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import orjson

from vbatch.engine.monitor import LoadMonitor
from vbatch.engine.stats import RunStats, _duration
from vbatch.prepare.scan import CheckCount
from vbatch.terminal import TransientLine
from vbatch.transport.pool import ServerConnection

__all__ = ["MODES", "Progress", "RunGauges", "Snapshot", "show_check"]

MODES = ("bar", "log", "json", "quiet")
_WINDOW_S = 30.0
# Most per-server lines the view shows (more are summed into one).
_SERVER_LINES = 8


@dataclass(frozen=True)
class ServerLine:
    """One server's state in the view."""

    url: str
    running: float | None
    waiting: float | None
    kv_usage: float | None
    prefix_hit_rate: float | None = None  # since the server started


@dataclass(frozen=True)
class Snapshot:
    """Progress at one instant."""

    done: int
    total: int
    failed: int
    rows_per_s: float | None
    tokens_per_s: float | None
    eta_s: float | None
    elapsed_s: float = 0.0
    in_flight: int | None = None
    bound: int | None = None
    failures: dict[str, int] = field(default_factory=dict)
    servers: list[ServerLine] = field(default_factory=list)
    # Invalid answers (structured outputs) by reason, those asked again included.
    invalid: dict[str, int] = field(default_factory=dict)
    # A program run: rows whose programs are running, calls made, calls per second.
    active_rows: int | None = None
    calls: int = 0
    calls_per_s: float | None = None
    budget: str | None = None


@dataclass
class RunGauges:
    """What the view reads besides the statistics: requests in flight, the bound, the load."""

    in_flight: Callable[[], int]
    bound: Callable[[], int]
    monitor: LoadMonitor | None = None
    servers: list[ServerConnection] = field(default_factory=list)
    # A program run's rows whose programs are running.
    active_rows: Callable[[], int] | None = None
    # The budget used and when it runs out, when the run has one.
    budget: Callable[[], str | None] | None = None


class Progress:
    """Tracks a run's progress from its :class:`RunStats` (and ``gauges``) and renders it."""

    def __init__(
        self,
        stats: RunStats,
        stream: TextIO,
        *,
        mode: str = "bar",
        refresh_s: float = 0.25,
        log_interval_s: float = 10.0,
        gauges: RunGauges | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown progress mode {mode!r}")
        self.stats = stats
        self.stream = stream
        self.mode = mode
        self.refresh_s = refresh_s
        self.log_interval_s = log_interval_s
        self.gauges = gauges
        self._samples: deque[tuple[float, int, int]] = deque()
        self._last_log: float | None = None
        self._live: Any = None

    def tick(self) -> Snapshot:
        """Record a sample now and return the current snapshot."""
        now = self.stats.clock()
        stats = self.stats
        self._samples.append((now, stats.done, stats.completion_tokens))
        while len(self._samples) > 2 and now - self._samples[1][0] >= _WINDOW_S:
            self._samples.popleft()
        first_t, first_done, first_tokens = self._samples[0]
        span = now - first_t
        rows_per_s = tokens_per_s = eta = None
        if span > 0:
            rows_per_s = (stats.done - first_done) / span
            tokens_per_s = (stats.completion_tokens - first_tokens) / span
        total = stats.total_rows
        done = stats.already_done + stats.done
        if rows_per_s:
            eta = max(0, total - done) / rows_per_s
        gauges = self.gauges
        in_flight = bound = None
        servers: list[ServerLine] = []
        if gauges is not None:
            in_flight, bound = gauges.in_flight(), gauges.bound()
            if gauges.monitor is not None:
                server_rate = gauges.monitor.generation_rate()
                tokens_per_s = server_rate if server_rate is not None else tokens_per_s
            servers = [ServerLine(s.url, s.load.running, s.load.waiting, s.load.kv_usage,
                                  s.load.prefix_hit_rate)
                       for s in gauges.servers if s.load is not None]
        active = gauges.active_rows() if gauges is not None and gauges.active_rows else None
        calls_per_s = stats.calls / stats.elapsed if stats.calls and stats.elapsed else None
        return Snapshot(done, total, stats.failed, rows_per_s, tokens_per_s, eta,
                        stats.elapsed, in_flight, bound, stats.failure_counts(), servers,
                        dict(stats.invalid_answers), active, stats.calls, calls_per_s,
                        gauges.budget() if gauges is not None and gauges.budget else None)

    @staticmethod
    def format(snapshot: Snapshot) -> str:
        """One line of progress text (servers summed)."""
        return " | ".join(_parts(snapshot, with_servers=True))

    def render(self) -> None:
        """Redraw the view, or write a log line when its interval has passed."""
        if self.mode == "quiet":
            return
        snapshot = self.tick()
        if self.mode == "bar":
            self._draw(snapshot)
            return
        now = self.stats.clock()
        if self._last_log is None or now - self._last_log >= self.log_interval_s:
            self._last_log = now
            if self.mode == "json":
                line = orjson.dumps({"event": "progress", **asdict(snapshot)}).decode()
            else:
                line = "vbatch: " + self.format(snapshot)
            self.stream.write(line + "\n")
            self.stream.flush()

    def say(self, text: str) -> None:
        """A message above the live view (or a plain line when there is none)."""
        if self._live is not None:
            self._live.console.print(f"vbatch: {text}", markup=False, highlight=False,
                                     soft_wrap=True)
            return
        self.stream.write(f"vbatch: {text}\n")
        self.stream.flush()

    async def run(self) -> None:
        """Render periodically until cancelled."""
        while True:
            self.render()
            await asyncio.sleep(self.refresh_s)

    def close(self) -> None:
        """Draw the final state and leave the view."""
        if self.mode == "quiet":
            return
        self._last_log = None
        self.render()
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _draw(self, snapshot: Snapshot) -> None:
        from rich.live import Live

        if self._live is None:
            from rich.console import Console

            console = Console(file=self.stream, highlight=False)
            self._live = Live(console=console, auto_refresh=False, transient=False,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        console = self._live.console
        self._live.update(_view(snapshot, console.width, console.height), refresh=True)


def _rate(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _load(running: float | None, waiting: float | None, kv: float | None) -> str:
    text = f"{_rate(running, 0)} running, {_rate(waiting, 0)} waiting"
    return text + (f", KV {kv:.0%}" if kv is not None else "")


def _parts(snapshot: Snapshot, with_servers: bool) -> list[str]:
    total = snapshot.total
    fraction = snapshot.done / total if total else 1.0
    parts = [f"{snapshot.done}/{total} rows ({fraction:.0%})",
             f"{_rate(snapshot.rows_per_s, 1)} rows/s",
             f"{_rate(snapshot.tokens_per_s, 0)} tok/s"]
    if snapshot.active_rows is not None:
        per_row = f", {snapshot.calls / snapshot.done:.1f}/row" if snapshot.done else ""
        parts.append(f"active rows {snapshot.active_rows} | calls {snapshot.calls} "
                     f"({_rate(snapshot.calls_per_s, 1)}/s{per_row})")
    if snapshot.in_flight is not None:
        parts.append(f"in flight {snapshot.in_flight}/{snapshot.bound}")
    if with_servers and snapshot.servers:
        servers = snapshot.servers
        running = sum(s.running or 0 for s in servers)
        waiting = sum(s.waiting or 0 for s in servers)
        kv = [s.kv_usage for s in servers if s.kv_usage is not None]
        parts.append("server " + _load(running, waiting, max(kv) if kv else None))
    failed = f"{snapshot.failed} failed"
    if snapshot.failures:
        failed += " (" + ", ".join(f"{k}: {n}" for k, n in snapshot.failures.items()) + ")"
    parts.append(failed)
    if snapshot.invalid:
        parts.append(f"invalid answers {sum(snapshot.invalid.values())} ("
                     + ", ".join(f"{k}: {n}" for k, n in snapshot.invalid.items()) + ")")
    if snapshot.budget:
        parts.append(snapshot.budget)
    parts.append(f"elapsed {_duration(snapshot.elapsed_s)}")
    parts.append("ETA " + ("-" if snapshot.eta_s is None else _duration(snapshot.eta_s)))
    return parts


def _packed(parts: list[str], width: int) -> list[str]:
    """``parts`` joined by " | " into as few lines as fit ``width``."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " | " + part
        else:
            lines.append(part)
    return lines


def _view(snapshot: Snapshot, width: int, height: int) -> Any:
    """The live view: a bar, then the figures packed into lines of the terminal's ``width``,
    then one line per server while the terminal's ``height`` allows; a line never wraps (one
    too long ends in an ellipsis)."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    bar_width = max(10, min(30, width // 4))
    parts = _parts(snapshot, with_servers=len(snapshot.servers) == 1)
    beside_bar = 1
    while (beside_bar < len(parts)
           and len(" | ".join(parts[:beside_bar + 1])) <= width - bar_width - 1):
        beside_bar += 1
    first = " | ".join(parts[:beside_bar])
    head = Table.grid(padding=(0, 1))
    head.add_column(width=bar_width, no_wrap=True)
    head.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
    head.add_row(ProgressBar(total=max(1, snapshot.total), completed=snapshot.done,
                             width=bar_width), Text(first, no_wrap=True, overflow="ellipsis"))
    lines: list[Any] = [head]
    lines += [Text(line, no_wrap=True, overflow="ellipsis")
              for line in _packed(parts[beside_bar:], width)]
    if len(snapshot.servers) > 1:
        room = max(1, min(_SERVER_LINES, height - len(lines) - 2))
        shown = snapshot.servers[:room]
        for server in shown:
            hits = (f", prefix hits {server.prefix_hit_rate:.0%}"
                    if server.prefix_hit_rate is not None else "")
            lines.append(Text(f"  {server.url}: " + _load(server.running, server.waiting,
                                                        server.kv_usage) + hits,
                              no_wrap=True, overflow="ellipsis"))
        if len(snapshot.servers) > len(shown):
            lines.append(Text(f"  ... and {len(snapshot.servers) - len(shown)} more servers",
                              no_wrap=True, overflow="ellipsis"))
    return Group(*lines)


async def show_check(checked: CheckCount, name: str, stream: TextIO, mode: str,
                     log_interval_s: float, clock: Callable[[], float]) -> None:
    """How far the check of the input ``name`` is (rows checked, rows/s), once it has taken a
    second: on a terminal a line redrawn in place (gone when the check ends), else a log line
    every ``log_interval_s`` seconds. Runs until cancelled."""
    if mode == "quiet":
        return
    started = clock()
    await asyncio.sleep(1.0)
    live: TransientLine | None = None
    last_log: float | None = None
    try:
        while True:
            elapsed = clock() - started
            rate = checked.rows / elapsed if elapsed > 0 else 0.0
            text = f"checking {name}: {checked.rows} rows ({rate:.0f} rows/s)"
            if mode == "bar":
                live = live or TransientLine(stream)
                live.show("vbatch: " + text)
            elif last_log is None or clock() - last_log >= log_interval_s:
                last_log = clock()
                line = (orjson.dumps({"event": "check", "rows": checked.rows,
                                      "rows_per_s": round(rate, 1)}).decode()
                        if mode == "json" else "vbatch: " + text)
                stream.write(line + "\n")
                stream.flush()
            await asyncio.sleep(0.25)
    finally:
        if live is not None:
            live.close()
