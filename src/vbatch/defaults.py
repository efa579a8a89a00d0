"""Every default of a run, in one table: the library, the CLI and the modules use these names.

The CLI's ``--help`` shows them, :class:`~vbatch.config.RunConfig` takes them as field defaults,
and the modules use them in their signatures, so a default changes here and nowhere else.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_EMBEDDING_DTYPE",
    "DEFAULT_ENDPOINT",
    "DEFAULT_GPU_MEMORY_UTILIZATION",
    "DEFAULT_ID_FIELD",
    "DEFAULT_INPUTS_PER_REQUEST",
    "DEFAULT_LOG_EVERY",
    "DEFAULT_LOG_FORMAT",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_DOWNTIME",
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_N",
    "DEFAULT_ON_BAD_ROW",
    "DEFAULT_ON_OVERFLOW",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_PROMPT_FIELD",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_RETRY_BASE_DELAY",
    "DEFAULT_SHUTDOWN_GRACE",
    "DEFAULT_STARTUP_TIMEOUT",
    "DEFAULT_START_CONCURRENCY",
    "DEFAULT_TENSOR_PARALLEL_SIZE",
]

DEFAULT_ENDPOINT: Final = "chat"
DEFAULT_EMBEDDING_DTYPE: Final = "float32"
# Pooling rows per request (embeddings, classify): see vbatch.engine.items.
DEFAULT_INPUTS_PER_REQUEST: Final = 16
# Seconds between progress lines when the output is not a terminal, and their format.
DEFAULT_LOG_EVERY: Final = 10.0
DEFAULT_LOG_FORMAT: Final = "text"
DEFAULT_N = 1
DEFAULT_ID_FIELD = "id"
DEFAULT_PROMPT_FIELD = "prompt"
DEFAULT_ON_BAD_ROW: Final = "fail"
DEFAULT_ON_OVERFLOW: Final = "clamp"

DEFAULT_CONCURRENCY: Final = "auto"
DEFAULT_MAX_CONCURRENCY = 1024
# Where ``--concurrency auto`` starts; the controller then follows the server's load.
DEFAULT_START_CONCURRENCY = 256
# Connections of one client when no concurrency says otherwise.
DEFAULT_POOL_SIZE = 256
DEFAULT_MAX_RETRIES = 6
DEFAULT_RETRY_BASE_DELAY = 0.5
DEFAULT_REQUEST_TIMEOUT = 600.0
DEFAULT_MAX_DOWNTIME = 600.0
DEFAULT_SHUTDOWN_GRACE = 5.0

DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
DEFAULT_TENSOR_PARALLEL_SIZE = 1
DEFAULT_MAX_RESTARTS = 3
DEFAULT_STARTUP_TIMEOUT = 1200.0
