"""vbatch: run a whole dataset through an LLM served by vLLM, all at once, bounded, resumable.

The public API::

    import vbatch
    out = vbatch.generate(["Why is the sky blue?", ...], base_url=URL, max_tokens=256)
    out[0]["text"], out[0]["status"]              # records, in input order
    df = vbatch.generate(df, prompt_field="question")   # DataFrame in, DataFrame out
    df = vbatch.generate(df, response_format=Person)    # a pydantic model: typed columns

    result = vbatch.run(vbatch.RunConfig(input="prompts.jsonl", output="out.jsonl",
                                         base_url="http://127.0.0.1:8000/v1", max_tokens=256))
    result.stats.ok, result.stats.failed, result.exit_code
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vbatch._version import __version__
from vbatch.config import RunConfig
from vbatch.errors import (
    EXIT_BUDGET,
    EXIT_FAILED_ROWS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_SERVER,
    EXIT_USAGE,
    BudgetReachedError,
    CallFailedError,
    ConfigError,
    ConnectError,
    ContextOverflowError,
    HTTPStatusError,
    InputError,
    InvalidOutputError,
    InvalidResponseError,
    ManifestMismatchError,
    OutputError,
    OutputLockedError,
    OutputWriteError,
    RequestError,
    RequestTimeout,
    RunAbortedError,
    RunStoppedError,
    ServerDiedError,
    ServerError,
    ServerStartError,
    TransportError,
    VbatchError,
)
from vbatch.structured.specs import Choice, Grammar, JsonObject, JsonSchema, OutputSpec, Regex

if TYPE_CHECKING:
    from vbatch.api import Server, agenerate, generate, stream
    from vbatch.engine.control import RunControl
    from vbatch.engine.result import RunResult
    from vbatch.engine.stats import RunStats
    from vbatch.runner import arun, run

# Loaded on first use, so that ``import vbatch`` (and ``vbatch --help``) stay fast.
_LAZY = {"run": "vbatch.runner", "arun": "vbatch.runner", "RunResult": "vbatch.engine.result",
         "RunStats": "vbatch.engine.stats", "RunControl": "vbatch.engine.control",
         "generate": "vbatch.api", "agenerate": "vbatch.api", "stream": "vbatch.api",
         "Server": "vbatch.api"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vbatch' has no attribute {name!r}")

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
    "Choice",
    "ConfigError",
    "ConnectError",
    "ContextOverflowError",
    "Grammar",
    "HTTPStatusError",
    "InputError",
    "InvalidOutputError",
    "InvalidResponseError",
    "JsonObject",
    "JsonSchema",
    "ManifestMismatchError",
    "OutputError",
    "OutputLockedError",
    "OutputSpec",
    "OutputWriteError",
    "Regex",
    "RequestError",
    "RequestTimeout",
    "RunAbortedError",
    "RunConfig",
    "RunControl",
    "RunResult",
    "RunStats",
    "RunStoppedError",
    "Server",
    "ServerDiedError",
    "ServerError",
    "ServerStartError",
    "TransportError",
    "VbatchError",
    "__version__",
    "agenerate",
    "arun",
    "generate",
    "run",
    "stream",
]
