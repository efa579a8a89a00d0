"""Fail fast: stop a run whose first requests all fail the same way and none succeeds, and a
run whose server breaks midway.

A wrong model name, a rejected key or a dead server make every row fail for the same
reason. Until one request succeeds, the breaker holds back the failed records; when
``trip_after`` of them in a row share one cause it trips: the run stops sending and the
held rows get no record, so the same command, rerun after the cause is fixed, sends them.

Once a request has succeeded, a row's own failures pass straight through, but failures that
say the server is broken (5xx, dropped connections, timeouts, unreadable answers, each after
its retries) are held back while they come one after another: ``broken_after`` of them with
no success between trips the breaker the same way, so a server that starts failing everything
is not fed the rest of the input row by row. A success releases what was held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vbatch.errors import RunAbortedError

__all__ = ["DEFAULT_BROKEN_AFTER", "DEFAULT_TRIP_AFTER", "CircuitBreaker"]

DEFAULT_TRIP_AFTER = 8
DEFAULT_BROKEN_AFTER = 32
# Failures that say the server is broken rather than the request wrong.
_SERVER_FAILURES = ("connection_error", "timeout", "invalid_response")
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


def _server_broken(record: dict[str, Any]) -> bool:
    """Whether a failed record says the server is broken (after the request's retries)."""
    error = record.get("error")
    if record.get("status") != "failed" or not error or not record.get("attempts"):
        return False
    status = error.get("status_code")
    return error.get("type") in _SERVER_FAILURES or (isinstance(status, int) and status >= 500)


@dataclass
class CircuitBreaker:
    """Decides which records to write: all of them, but the failures that may mean the
    run cannot go on (see the module docstring)."""

    trip_after: int = DEFAULT_TRIP_AFTER
    broken_after: int = DEFAULT_BROKEN_AFTER
    cause: str | None = None
    # Why the run stopped, in a sentence: what :class:`RunAbortedError` says.
    reason: str | None = None
    _spent: bool = False
    _held: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tripped(self) -> bool:
        return self.cause is not None

    def raise_if_tripped(self) -> None:
        """Raise RunAbortedError, saying why and what to do, when the breaker tripped."""
        if self.cause is not None:
            raise RunAbortedError(
                f"{self.reason}, so vbatch stopped sending: {self.cause}\nFix the cause "
                "(model name, API key, server address, the server itself) and run the same "
                "command again: the rows not sent have no record and will be sent then.")

    def admit(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """The records to write now that ``record`` came back."""
        if self.tripped:
            return []
        if self._spent:
            return self._admit_after_success(record)
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
            self.reason = (f"the first {self.trip_after} requests all failed and none "
                           "succeeded")
        return []

    def _admit_after_success(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        if not _server_broken(record):
            return [*self.release(), record] if record.get("status") == "ok" else [record]
        self._held.append(record)
        if len(self._held) >= self.broken_after:
            self.cause = failure_cause(record)
            self.reason = (f"the server broke during the run: the last {self.broken_after} "
                           "requests all failed after their retries")
        return []

    def release(self) -> list[dict[str, Any]]:
        """The held records, to write when the run ends without tripping."""
        held, self._held = self._held, []
        return [] if self.tripped else held
