"""Every default and every choice list of a run, in one table: the library, the CLI and the
modules use these names.

The CLI's ``--help`` is built from them, :class:`~vbatch.config.RunConfig` takes them as field
defaults and checks its choices against them, and the modules use them in their signatures, so
a default changes here and nowhere else (``tests/test_cli.py`` checks that every option's help
states the default the code uses).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_BATCH_LIMITS",
    "DEFAULT_CACHE_MAX_SIZE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_EMBEDDING_DTYPE",
    "DEFAULT_ENDPOINT",
    "DEFAULT_GPU_MEMORY_UTILIZATION",
    "DEFAULT_GROUP_BY_PREFIX",
    "DEFAULT_ID_FIELD",
    "DEFAULT_INPUTS_PER_REQUEST",
    "DEFAULT_INVALID_FINISH_REASONS",
    "DEFAULT_LOG_EVERY",
    "DEFAULT_LOG_FORMAT",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_DOWNTIME",
    "DEFAULT_MAX_INVALID_RETRIES",
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_N",
    "DEFAULT_ON_BAD_ROW",
    "DEFAULT_ON_OVERFLOW",
    "DEFAULT_PREFIX_ROUTING",
    "DEFAULT_PROMPT_FIELD",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_RETRY_BASE_DELAY",
    "DEFAULT_SHUTDOWN_GRACE",
    "DEFAULT_STARTUP_TIMEOUT",
    "DEFAULT_START_CONCURRENCY",
    "DEFAULT_TENSOR_PARALLEL_SIZE",
    "GROUP_BY_PREFIX_CHOICES",
    "INPUT_FORMATS",
    "LOG_FORMATS",
    "MOST_CONCURRENCY",
    "ON_BAD_ROW_POLICIES",
    "ON_OVERFLOW_POLICIES",
]

# The choices of the options that take one of a list.
INPUT_FORMATS: Final = ("jsonl", "csv", "parquet", "arrow", "datasets", "openai-batch")
ON_BAD_ROW_POLICIES: Final = ("fail", "skip")
ON_OVERFLOW_POLICIES: Final = ("clamp", "skip", "fail")
LOG_FORMATS: Final = ("text", "json")
GROUP_BY_PREFIX_CHOICES: Final = ("auto", "on", "off")

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
# Several servers: prompts that start alike go to one server (vbatch.transport.affinity).
DEFAULT_PREFIX_ROUTING: Final = True
# Rows sharing long prompt prefixes are sent together where that pays (vbatch.source.prefix).
DEFAULT_GROUP_BY_PREFIX: Final = "auto"

DEFAULT_CONCURRENCY: Final = "auto"
DEFAULT_MAX_CONCURRENCY = 1024
# The most requests --concurrency or --max-concurrency may keep in flight.
MOST_CONCURRENCY: Final = 16_384
# Where ``--concurrency auto`` starts; the controller then follows the server's load.
DEFAULT_START_CONCURRENCY = 256
DEFAULT_MAX_RETRIES = 6
DEFAULT_RETRY_BASE_DELAY = 0.5
DEFAULT_REQUEST_TIMEOUT = 600.0
DEFAULT_MAX_DOWNTIME = 600.0
DEFAULT_SHUTDOWN_GRACE = 5.0
# Structured outputs: an answer that ends with one of these finish reasons is invalid (cut
# before it was complete), and an invalid answer is asked again this many times.
DEFAULT_INVALID_FINISH_REASONS: Final = ("length",)
DEFAULT_MAX_INVALID_RETRIES = 2
# The response cache's size (--cache-max-size), before the least recently used are evicted.
DEFAULT_CACHE_MAX_SIZE: Final = "10G"

DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
DEFAULT_TENSOR_PARALLEL_SIZE = 1
DEFAULT_MAX_RESTARTS = 3
DEFAULT_STARTUP_TIMEOUT = 1200.0
# The managed server's batch limits, (--max-num-seqs, --max-num-batched-tokens) by vLLM build,
# set on purpose (vLLM's API server and offline LLM default to different ones). CPU: 128
# sequences finished make run's job as fast as 256 and gave its first record earlier
# (benchmarks/cpu_settings.py); on a GPU, offline LLM's 1,024 / 16,384.
DEFAULT_BATCH_LIMITS: Final = {"cpu": (128, 4096), "gpu": (1024, 16384)}
