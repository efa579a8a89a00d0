"""Run statistics in constant memory: counts, tokens, failures by reason, latency quantiles."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vbatch.output.records import is_empty

_FIRST_EDGE = 0.001
_GROWTH = 1.02
_BUCKETS = int(math.log(1e5 / _FIRST_EDGE, _GROWTH)) + 2


class LatencyHistogram:
    """Latency quantiles within 2% from a fixed set of logarithmic buckets (1 ms to 1 day)."""

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.maximum = 0.0

    def add(self, seconds: float) -> None:
        if seconds <= _FIRST_EDGE:
            bucket = 0
        else:
            bucket = min(_BUCKETS - 1, int(math.log(seconds / _FIRST_EDGE, _GROWTH)) + 1)
        self._counts[bucket] += 1
        self.count += 1
        self.maximum = max(self.maximum, seconds)

    def absorb(self, other: LatencyHistogram) -> None:
        """Add the latencies counted by ``other``."""
        for bucket, count in enumerate(other._counts):
            self._counts[bucket] += count
        self.count += other.count
        self.maximum = max(self.maximum, other.maximum)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1), as its bucket's upper edge capped at the maximum seen."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for bucket, count in enumerate(self._counts):
            seen += count
            if seen >= rank:
                return min(self.maximum, _FIRST_EDGE * _GROWTH**bucket)
        return self.maximum


@dataclass
class FailureGroup:
    """Failed rows that share a reason."""

    count: int
    example: str


@dataclass
class RunStats:
    """What a run did; ``clock`` is injectable so rates are testable."""

    clock: Callable[[], float]
    total_rows: int = 0
    already_done: int = 0
    already_failed: int = 0
    # Rows whose records --rerun-if removed, sent again by this run.
    rerun: int = 0
    clamped: int = 0
    context_truncated: int = 0
    ok: int = 0
    failed: int = 0
    empty: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    failures: dict[str, FailureGroup] = field(default_factory=dict)
    # Answers that were not of the shape asked, by reason (those asked again included).
    invalid_answers: dict[str, int] = field(default_factory=dict)
    # A program run: the rows' calls, those replayed from the calls journal, those sent again
    # because their request changed.
    calls: int = 0
    calls_replayed: int = 0
    calls_changed: int = 0
    # Records whose answer was reused from the response cache (no request sent).
    cached: int = 0
    # The budget that stopped the run, if one did.
    budget_reached: str | None = None
    concurrency_trace: list[dict[str, Any]] | None = None
    endpoints: list[dict[str, Any]] | None = None
    started: float = 0.0
    finished: float | None = None
    # When the command began, and how long its phases before and after sending took
    # ("setup", "check", "server start", "writing"), for a summary that covers the whole
    # command.
    command_started: float | None = None
    phases: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.started = self.clock()

    def finish(self) -> None:
        self.finished = self.clock()

    @property
    def done(self) -> int:
        """Rows recorded by this run."""
        return self.ok + self.failed

    @property
    def missing(self) -> int:
        """Input rows that have no record in the output (0 after a complete run)."""
        return max(0, self.total_rows - self.already_done - self.done)

    @property
    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else self.clock()
        return max(0.0, end - self.started)

    def add(self, record: dict[str, Any]) -> None:
        """Count one output record."""
        usage = record.get("usage")
        if usage:
            self.prompt_tokens += usage.get("prompt_tokens") or 0
            self.completion_tokens += usage.get("completion_tokens") or 0
        if record.get("clamped_max_tokens") is not None:
            self.clamped += 1
        if record.get("context_truncated"):
            self.context_truncated += 1
        latency = record.get("latency_s")
        if latency is not None:
            self.latency.add(latency)
        for reason, count in (record.get("invalid_answers") or {}).items():
            self.invalid_answers[reason] = self.invalid_answers.get(reason, 0) + count
        self.cached += bool(record.get("cached"))
        if "calls" in record:
            self.calls += record["calls"]
            self.calls_replayed += record.get("calls_replayed", 0)
            self.calls_changed += record.get("calls_changed", 0)
        if record["status"] == "ok":
            self.ok += 1
            self.empty += is_empty(record)
            return
        self.failed += 1
        error = record.get("error") or {}
        key = str(error.get("type"))
        if error.get("status_code"):
            key += f" (HTTP {error['status_code']})"
        elif error.get("reason"):
            key += f" ({error['reason']})"
        group = self.failures.get(key)
        if group is None:
            self.failures[key] = FailureGroup(1, str(error.get("message", ""))[:300])
        else:
            group.count += 1

    def failure_counts(self) -> dict[str, int]:
        """Failed rows by kind (the summary's keys: type and HTTP status)."""
        return {kind: group.count for kind, group in self.failures.items()}

    def absorb(self, other: RunStats) -> None:
        """Add what ``other`` (a part of this run, e.g. one shard) recorded."""
        self.ok += other.ok
        self.empty += other.empty
        self.failed += other.failed
        self.clamped += other.clamped
        self.context_truncated += other.context_truncated
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.latency.absorb(other.latency)
        self.calls += other.calls
        self.cached += other.cached
        self.calls_replayed += other.calls_replayed
        self.calls_changed += other.calls_changed
        for reason, count in other.invalid_answers.items():
            self.invalid_answers[reason] = self.invalid_answers.get(reason, 0) + count
        for key, group in other.failures.items():
            mine = self.failures.get(key)
            if mine is None:
                self.failures[key] = FailureGroup(group.count, group.example)
            else:
                mine.count += group.count

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain data (what ``--stats-json`` writes)."""
        # No rate for a run that sent nothing (a resume with nothing left).
        elapsed = self.elapsed if self.done else 0.0
        return {
            "rows_total": self.total_rows,
            "rows_already_done": self.already_done,
            "rows_failed_earlier": self.already_failed,
            "rows_rerun": self.rerun,
            "rows_cached": self.cached,
            "rows_empty": self.empty,
            "rows_missing": self.missing,
            "rows_clamped": self.clamped,
            "rows_cut_by_context": self.context_truncated,
            "rows_ok": self.ok,
            "rows_failed": self.failed,
            "wall_time_s": round(self.elapsed, 3),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "rows_per_s": round(self.done / elapsed, 3) if elapsed else None,
            "completion_tokens_per_s": (
                round(self.completion_tokens / elapsed, 3) if elapsed else None
            ),
            "latency_s": {
                name: _round(self.latency.quantile(q))
                for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
            },
            "failures": {
                key: {"count": group.count, "example": group.example}
                for key, group in sorted(self.failures.items(), key=lambda kv: -kv[1].count)
            },
            "invalid_answers": dict(self.invalid_answers),
            "calls": self.calls,
            "calls_replayed": self.calls_replayed,
            "calls_changed": self.calls_changed,
            "phases_s": {name: round(seconds, 3) for name, seconds in self.phases.items()},
            "endpoints": self.endpoints,
            "concurrency_trace": self.concurrency_trace,
        }

    def _wall_time_text(self, sending: float) -> str:
        if self.command_started is None:
            return f"wall time: {_duration(sending)}"
        # Phases under 0.05 s (connecting to a running server, a small check) are left out.
        phases = [f"{name} {_duration(seconds)}" for name, seconds in self.phases.items()
                  if name != "writing" and seconds >= 0.05]
        phases.append(f"sending {_duration(sending)}")
        if self.phases.get("writing", 0.0) >= 0.05:
            phases.append(f"writing {_duration(self.phases['writing'])}")
        total = self.clock() - self.command_started
        return f"wall time: {_duration(total)} ({', '.join(phases)})"

    def summary_text(self) -> str:
        """The human summary printed at the end of a run."""
        data = self.to_dict()
        lat = data["latency_s"]
        lines = [
            f"rows: {self.ok} ok, {self.failed} failed"
            + (f", {self.already_done} already done" if self.already_done else "")
            + f" of {self.total_rows}",
            self._wall_time_text(data["wall_time_s"]),
            f"tokens: {self.prompt_tokens} in, {self.completion_tokens} out"
            + (
                f" ({data['completion_tokens_per_s']:.1f} out/s, {data['rows_per_s']:.2f} rows/s)"
                if data["rows_per_s"] is not None
                else ""
            ),
        ]
        if lat["p50"] is not None:
            lines.append(f"latency: p50 {lat['p50']:.3f} s, p95 {lat['p95']:.3f} s, "
                         f"p99 {lat['p99']:.3f} s")
        if self.cached:
            lines.append(f"cached: {self.cached} answers reused from --cache-dir, no request "
                         "sent (their records say cached)")
        if self.rerun:
            lines.append(f"rerun: {self.rerun} rows matched --rerun-if and were sent again; "
                         "the other records were kept as they were")
        if self.calls:
            per_row = f" ({self.calls / self.done:.1f} per row)" if self.done else ""
            replayed = (f", {self.calls_replayed} replayed from the calls journal"
                        if self.calls_replayed else "")
            changed = (f", {self.calls_changed} sent again because their request changed"
                       if self.calls_changed else "")
            lines.append(f"calls: {self.calls}{per_row}{replayed}{changed}")
        if self.clamped:
            lines.append(f"clamped: max_tokens lowered to fit the context on {self.clamped} rows "
                         "(their records say clamped_max_tokens)")
        if self.context_truncated:
            lines.append(f"cut by the context: {self.context_truncated} outputs stopped because "
                         "the context was full (their records say context_truncated)")
        for key, failure in data["failures"].items():
            lines.append(f"failed: {failure['count']} x {key}: {failure['example']}")
        if self.invalid_answers:
            reasons = ", ".join(f"{reason} {count}" for reason, count
                                in sorted(self.invalid_answers.items(), key=lambda kv: -kv[1]))
            lines.append(f"invalid answers: {sum(self.invalid_answers.values())} ({reasons}), "
                         "each asked again until --max-invalid-retries")
        for endpoint in self.endpoints or []:
            lines.append(
                f"endpoint {endpoint['url']}: {endpoint['requests']} requests "
                f"({endpoint.get('affine_requests', 0)} for their prompt's start), "
                f"{endpoint['transport_errors']} connection errors, drained "
                f"{endpoint['times_drained']} times, mean latency {endpoint['mean_latency_s']} s"
            )
        if self.empty:
            lines.append(f"empty: {self.empty} ok rows have no text, tool calls or reasoning")
        if self.budget_reached is not None and self.done:
            left = self.missing
            seconds = left * self.elapsed / self.done
            tokens = left * (self.prompt_tokens + self.completion_tokens) / self.done
            lines.append(f"budget reached ({self.budget_reached}): at this run's pace the "
                         f"{left} rows left need about {_duration(seconds)} and "
                         f"{int(tokens)} tokens")
        if self.missing:
            lines.append(f"missing: {self.missing} of {self.total_rows} input rows have no "
                         "record; run the same command again to send them")
        if self.already_failed:
            lines.append(
                f"{self.already_failed} rows failed in an earlier run: rerun with --retry-failed "
                "to send them again"
            )
        return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
