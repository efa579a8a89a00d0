"""Fail fast: stop a run whose first requests all fail the same way and none succeeds.

A wrong model name, a rejected key or a dead server make every row fail for the same
reason. Until one request succeeds, the breaker holds back the failed records; when
``trip_after`` of them in a row share one cause it trips: the run stops sending and the
held rows get no record, so the same command, rerun after the cause is fixed, sends them.
Once any request succeeds the breaker is spent and records pass straight through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_TRIP_AFTER", "CircuitBreaker"]

DEFAULT_TRIP_AFTER = 8
# Failures that belong to one row, not to the server or the run's settings.
_ROW_FAILURES = ("bad_input", "context_overflow")


def failure_cause(record: dict[str, Any]) -> str | None:
    """What a failed record says went wrong, e.g. ``http_error (HTTP 404): ...``; None for
    an ok record, a row that was never sent or a failure that belongs to the row."""
    error = record.get("error")
    if record.get("status") != "failed" or not error or not record.get("attempts"):
        return None
    if error.get("type") in _ROW_FAILURES:
        return None
    status = error.get("status_code")
    where = f" (HTTP {status})" if status else ""
    return f"{error.get('type')}{where}: {str(error.get('message', ''))[:300]}"


@dataclass
class CircuitBreaker:
    """Decides which records to write while no request has succeeded yet."""

    trip_after: int = DEFAULT_TRIP_AFTER
    cause: str | None = None
    _spent: bool = False
    _held: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tripped(self) -> bool:
        return self.cause is not None

    def admit(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """The records to write now that ``record`` came back."""
        if self._spent:
            return [record]
        if self.tripped:
            return []
        cause = failure_cause(record)
        if cause is None:
            if record.get("status") == "ok":
                self._spent = True
                return [*self.release(), record]
            return [record]
        if self._held and failure_cause(self._held[0]) != cause:
            self._spent = True
            return [*self.release(), record]
        self._held.append(record)
        if len(self._held) >= self.trip_after:
            self.cause = cause
        return []

    def release(self) -> list[dict[str, Any]]:
        """The held records, to write when the run ends without tripping."""
        held, self._held = self._held, []
        return [] if self.tripped else held
