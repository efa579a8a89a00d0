"""The exception tree of vbatch, by where a failure happens.

Everything vbatch raises on purpose derives from :class:`VbatchError`; each class carries the
``exit_code`` the CLI exits with when it ends a command (``vbatch.EXIT_*``)::

    VbatchError                      exit
    ├── ConfigError                  2  an option or combination of options is wrong
    │   └── ManifestMismatchError    2  resuming with different generation parameters
    ├── InputError                   2  a row of the input is malformed (file, line, field)
    ├── OutputError                  2  the output cannot be used (not vbatch's, damaged)
    │   ├── OutputLockedError        2  another run is writing the same output
    │   └── OutputWriteError         4  writing failed midway (disk full, ...); a rerun resumes
    ├── ServerError                  3  a vLLM server that vbatch manages failed
    │   ├── ServerStartError         3  it exited or hung while starting (its log's last lines)
    │   └── ServerDiedError          3  it died more often than --max-restarts allows
    ├── RunAbortedError              3  sending stopped: the first requests all failed the same
    │                                   way (wrong model or key), or no server answered for
    │                                   --max-downtime; a rerun sends the rows left
    ├── RunStoppedError            130  vbatch.generate/agenerate/stream stopped before every
    │   │                               row was done (Ctrl-C, RunControl.stop)
    │   └── BudgetReachedError       5  ... because a budget was reached (time, tokens,
    │                                   requests); the same call carries on
    ├── CallFailedError                 a program's call failed after its retries: raised in
    │                                   the program, which may catch it (else its row fails)
    └── RequestError                    one request failed: recorded in the output as the
        │                               row's ``error.type``; never ends a run
        ├── TransportError              connection refused or dropped, timeout (retried)
        │   ├── ConnectError
        │   └── RequestTimeout
        ├── InvalidResponseError        the server's 2xx answer is not an OpenAI response
        ├── HTTPStatusError             the server answered 4xx/5xx (408, 429, 5xx retried)
        ├── ContextOverflowError        a row does not fit the model's context
        └── InvalidOutputError          the answer is not of the shape asked (a schema, a
                                        regex, choices; cut by max_tokens), after retries

Foreign errors are translated at one boundary each: aiohttp's in
:func:`vbatch.transport.network.map_network_errors`, OS errors of writing in
:func:`write_failure`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EXIT_BUDGET",
    "EXIT_FAILED_ROWS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "EXIT_SERVER",
    "EXIT_USAGE",
    "BudgetReachedError",
    "CallFailedError",
    "ConfigError",
    "ConnectError",
    "ContextOverflowError",
    "HTTPStatusError",
    "InputError",
    "InvalidOutputError",
    "InvalidResponseError",
    "ManifestMismatchError",
    "OutputError",
    "OutputLockedError",
    "OutputWriteError",
    "RequestError",
    "RequestTimeout",
    "RunAbortedError",
    "RunStoppedError",
    "ServerDiedError",
    "ServerError",
    "ServerStartError",
    "TransportError",
    "VbatchError",
]

# The exit statuses of the CLI.
EXIT_OK = 0
# Some rows failed or have no record (every row was tried or the run ended early).
EXIT_FAILED_ROWS = 1
# Bad options, input or output: nothing was sent.
EXIT_USAGE = 2
# A server failed, or sending was aborted: a rerun resumes.
EXIT_SERVER = 3
# The output could not be written: a rerun resumes.
EXIT_OUTPUT = 4
# A budget (--time-limit, --token-budget, --max-requests) was reached: a rerun carries on.
EXIT_BUDGET = 5
# Stopped by Ctrl-C or SIGTERM: a rerun resumes.
EXIT_INTERRUPTED = 130


class VbatchError(Exception):
    """Base class of every error vbatch raises on purpose; ``exit_code`` is the CLI's exit
    status when the error ends a command."""

    exit_code = EXIT_USAGE


class ConfigError(VbatchError):
    """An option, or a combination of options, cannot work. Found before anything is sent."""


class ManifestMismatchError(ConfigError):
    """The output was produced with other generation parameters than this run's."""


class InputError(VbatchError):
    """A row of the input cannot be turned into a request.

    ``location`` is ``file:line`` (or ``file row N`` for Parquet) and ``field`` the
    field at fault, when there is one.
    """

    def __init__(self, location: str, problem: str, field: str | None = None, hint: str = ""):
        self.location = location
        self.problem = problem
        self.field = field
        self.hint = hint
        where = f"{location}: field '{field}'" if field else location
        text = f"{where}: {problem}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class OutputError(VbatchError):
    """The output cannot be used: not a vbatch output, damaged, or not writable."""


class OutputLockedError(OutputError):
    """Another vbatch run holds the lock of the same output."""


class OutputWriteError(OutputError):
    """The output (or a rewrite of it) could not be written: a full disk, a file too large,
    a read-only file system. What was written before stays valid; a rerun resumes."""

    exit_code = EXIT_OUTPUT


def write_failure(path: object, error: OSError) -> OutputWriteError:
    """The error to raise when writing ``path`` failed with ``error``."""
    return OutputWriteError(
        f"cannot write {path} ({error.strerror or error}): every record written before is "
        "kept; free space or fix the file system, then run the same command again to resume"
    )


class RunStoppedError(VbatchError):
    """A run of the Python API was stopped (Ctrl-C, :meth:`RunControl.stop`) before every row
    had a record; the records written so far stay in its ``cache``."""

    exit_code = EXIT_INTERRUPTED


class CallFailedError(VbatchError):
    """A call of a program (``await llm.chat(...)``) failed after its retries, or its answer
    was never of the shape asked: ``record`` is the call's failed record, ``error_type`` its
    ``error.type``. Raised inside the program, which may catch it; uncaught, it fails the row
    (``program_error``), never the run."""

    def __init__(self, message: str, record: dict[str, Any]):
        self.record = record
        error = record.get("error") or {}
        self.error_type = str(error.get("type"))
        super().__init__(message)


class BudgetReachedError(RunStoppedError):
    """A run of the Python API stopped because a budget (``time_limit``, ``token_budget``,
    ``max_requests``) was reached; the records so far are kept in its ``cache``, and the same
    call carries on."""

    exit_code = EXIT_BUDGET


class ServerError(VbatchError):
    """A vLLM server that vbatch manages failed."""

    exit_code = EXIT_SERVER


class ServerStartError(ServerError):
    """The server exited or did not become healthy while starting."""


class ServerDiedError(ServerError):
    """The server died during the run more often than ``--max-restarts`` allows."""


class RunAbortedError(VbatchError):
    """vbatch stopped sending: the first requests of the run all failed for one reason and
    none succeeded (a wrong model, a rejected key, a dead server), or no server answered for
    ``--max-downtime`` seconds. Running or managed servers alike; the rows not recorded are
    sent by the same command once the cause is fixed."""

    exit_code = EXIT_SERVER


class RequestError(VbatchError):
    """One request failed. ``error_type`` is the ``error.type`` written in the output."""

    error_type = "request_error"
    retryable = False
    status_code: int | None = None
    retry_after: float | None = None


class TransportError(RequestError):
    """The request did not get an HTTP answer (connection refused or dropped, timeout)."""

    error_type = "connection_error"
    retryable = True


class ConnectError(TransportError):
    """The connection could not be opened or was dropped before the answer."""


class RequestTimeout(TransportError):
    """No complete answer within the request timeout."""

    error_type = "timeout"


class InvalidResponseError(RequestError):
    """The server answered 2xx with a body that is not a usable OpenAI response."""

    error_type = "invalid_response"
    retryable = True


RETRYABLE_STATUS = frozenset({408, 429})


class HTTPStatusError(RequestError):
    """The server answered with an error status; 408, 429 and 5xx are retried."""

    error_type = "http_error"

    def __init__(
        self,
        status_code: int,
        message: str,
        retry_after: float | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
    ):
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after
        self.param = param
        self.code = code
        self.retryable = status_code in RETRYABLE_STATUS or status_code >= 500
        super().__init__(f"HTTP {status_code}: {message}")


class ContextOverflowError(RequestError):
    """A row does not fit the model's context under the ``--on-overflow`` policy."""

    error_type = "context_overflow"

    def __init__(self, message: str, status_code: int | None = None):
        self.message = message
        self.status_code = status_code
        super().__init__(message)


class InvalidOutputError(RequestError):
    """The answer is not of the shape the run asks for (``--json-schema``, ``--regex``,
    ``--choice``, ...) or ended with a finish reason of ``--invalid-finish-reasons``: ``reason``
    says which (``not_json``, ``schema``, ``pattern``, ``choice``, ``length``, ...); ``record``
    is the answer's record, whose text is kept."""

    error_type = "invalid_output"

    def __init__(self, reason: str, message: str, record: dict[str, Any]):
        self.reason = reason
        self.message = message
        self.record = record
        super().__init__(message)
