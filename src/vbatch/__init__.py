"""vbatch: run a whole dataset through an LLM served by vLLM, all at once, bounded, resumable.

The public API::

    import vbatch
    result = vbatch.run(vbatch.RunConfig(input="prompts.jsonl", output="out.jsonl",
                                         base_url="http://127.0.0.1:8000/v1", max_tokens=256))
    result.stats.ok, result.stats.failed, result.exit_code
"""

__version__ = "0.1.0"

from vbatch.config import RunConfig
from vbatch.errors import (
    ConfigError,
    ConnectError,
    HTTPStatusError,
    InputError,
    InvalidResponseError,
    ManifestMismatchError,
    OutputError,
    OutputLockedError,
    RequestError,
    RequestTimeout,
    TransportError,
    VbatchError,
)
from vbatch.runner import RunResult, arun, run
from vbatch.stats import RunStats

__all__ = [
    "ConfigError",
    "ConnectError",
    "HTTPStatusError",
    "InputError",
    "InvalidResponseError",
    "ManifestMismatchError",
    "OutputError",
    "OutputLockedError",
    "RequestError",
    "RequestTimeout",
    "RunConfig",
    "RunResult",
    "RunStats",
    "TransportError",
    "VbatchError",
    "__version__",
    "arun",
    "run",
]
