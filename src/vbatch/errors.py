"""The exception tree of vbatch.

Everything vbatch raises on purpose derives from :class:`VbatchError`::

    VbatchError
    ├── ConfigError              an option or combination of options is wrong
    │   └── ManifestMismatchError  resuming with different generation parameters
    ├── InputError               a row of the input is malformed (names file, line, field)
    ├── OutputError              the output file cannot be used for resume
    │   ├── OutputLockedError    another run is writing the same output
    │   └── OutputWriteError     writing the output failed midway (disk full, ...): exit 4
    ├── RunStoppedError          vbatch.generate/agenerate was stopped before every row was done
    ├── ServerError              the managed vLLM server failed
    │   ├── ServerStartError     it exited or hung while starting (with its log's last lines)
    │   ├── ServerDiedError      it died more often than --max-restarts allows
    │   └── RunAbortedError      the first requests all failed the same way: sending stopped
    ├── RequestError             one request failed; recorded in the output, never ends a run
    │   ├── TransportError       connection refused/dropped, timeout (retried)
    │   │   ├── ConnectError
    │   │   └── RequestTimeout
    │   ├── InvalidResponseError the server answered something that is not an OpenAI response
    │   ├── HTTPStatusError      the server answered 4xx/5xx (408, 429, 5xx retried)
    │   └── ContextOverflowError a row does not fit the model's context (see vbatch.prepare.fit)

aiohttp and OS errors are translated into these at the HTTP client boundary only.
"""

from __future__ import annotations


class VbatchError(Exception):
    """Base class of every error vbatch raises on purpose."""


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


def write_failure(path: object, error: OSError) -> OutputWriteError:
    """The error to raise when writing ``path`` failed with ``error``."""
    return OutputWriteError(
        f"cannot write {path} ({error.strerror or error}): every record written before is "
        "kept; free space or fix the file system, then run the same command again to resume"
    )


class RunStoppedError(VbatchError):
    """A run of the Python API was stopped (Ctrl-C, :meth:`RunControl.stop`) before every row
    had a record; the records written so far stay in its ``cache``."""


class ServerError(VbatchError):
    """The vLLM server that vbatch manages failed."""


class ServerStartError(ServerError):
    """The server exited or did not become healthy while starting."""


class ServerDiedError(ServerError):
    """The server died during the run more often than ``--max-restarts`` allows."""


class RunAbortedError(ServerError):
    """The first requests of a run all failed for one reason and none succeeded (a wrong
    model, a rejected key, a dead server): vbatch stopped sending. The rows not recorded
    are sent by the same command once the cause is fixed."""


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
