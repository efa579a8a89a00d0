"""One frozen object that holds every option of a run; the CLI builds it, the library takes it."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vbatch.budget import Budget, parse_duration, parse_token_budget
from vbatch.cache.store import parse_size
from vbatch.defaults import (
    DEFAULT_CACHE_MAX_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_EMBEDDING_DTYPE,
    DEFAULT_ENDPOINT,
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_GROUP_BY_PREFIX,
    DEFAULT_ID_FIELD,
    DEFAULT_INPUTS_PER_REQUEST,
    DEFAULT_INVALID_FINISH_REASONS,
    DEFAULT_LOG_EVERY,
    DEFAULT_LOG_FORMAT,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_DOWNTIME,
    DEFAULT_MAX_INVALID_RETRIES,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_N,
    DEFAULT_ON_BAD_ROW,
    DEFAULT_ON_OVERFLOW,
    DEFAULT_PREFIX_ROUTING,
    DEFAULT_PROMPT_FIELD,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RETRY_BASE_DELAY,
    DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_STARTUP_TIMEOUT,
    DEFAULT_TENSOR_PARALLEL_SIZE,
    GROUP_BY_PREFIX_CHOICES,
    INPUT_FORMATS,
    LOG_FORMATS,
    MOST_CONCURRENCY,
    ON_BAD_ROW_POLICIES,
    ON_OVERFLOW_POLICIES,
)
from vbatch.endpoints import EMBEDDING_DTYPES, ENDPOINTS
from vbatch.errors import ConfigError
from vbatch.output.select import record_test
from vbatch.program_loader import load_program
from vbatch.structured.parse import spec_of_body, spec_of_value
from vbatch.structured.specs import OutputSpec
from vbatch.urls import normalize_base_url

BadRowPolicy = Literal["fail", "skip"]
OverflowPolicy = Literal["clamp", "skip", "fail"]
GroupByPrefix = Literal["auto", "on", "off"]
API_KEY_ENV_VARS = ("VBATCH_API_KEY", "OPENAI_API_KEY")
# Number options and the least value each takes (None: any).
_WHOLE = {"max_tokens": 1, "seed": None, "n": 1, "max_concurrency": 1, "max_retries": 0,
          "max_model_len": 1, "tensor_parallel_size": 1, "max_num_seqs": 1,
          "max_num_batched_tokens": 1, "max_restarts": 0, "replicas": 1, "shard_rows": 1,
          "inputs_per_request": 1, "max_invalid_retries": 0, "rollouts": 1,
          "max_requests": 1}
# Fractional options: (least value, whether that value itself is allowed, greatest value).
_REAL = {"temperature": (0.0, True, None), "top_p": (0.0, False, 1.0),
         "retry_base_delay": (0.0, True, None), "request_timeout": (0.0, False, None),
         "shutdown_grace": (0.0, True, None), "gpu_memory_utilization": (0.0, False, 1.0),
         "max_downtime": (0.0, False, None), "log_every": (0.0, False, None),
         "startup_timeout": (0.0, False, None)}
# A whole number a request, the manifest and the server can all hold (a signed 64-bit one).
_LARGEST_WHOLE = 2**63 - 1
# Options with a smaller ceiling: a worker task waits for each request that may be in flight.
_MOST = {"concurrency": MOST_CONCURRENCY, "max_concurrency": MOST_CONCURRENCY}
_WHY_MOST = {name: ": more requests in flight than any server batches take memory for nothing"
             for name in _MOST}
_TEXTS = ("stop", "keep", "server_args", "invalid_finish_reasons")
_FLAGS = ("ordered", "retry_failed", "force", "quiet", "ray", "pooling",
          "keep_calls", "prefix_routing")
_FLAG_NAMES = {"retry_base_delay": "--retry-delay"}


def _flag(name: str) -> str:
    return _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def _whole(name: str, value: Any, least: int | None) -> int:
    number = value
    text = isinstance(value, str) and value.strip().lstrip("+-").isdigit()
    if text or (isinstance(value, float) and value.is_integer()):
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, int):
        raise ConfigError(f"{name} ({_flag(name)}) must be a whole number, not {value!r}")
    if least is not None and number < least:
        raise ConfigError(f"{name} ({_flag(name)}) must be at least {least}, not {value!r}")
    most = _MOST.get(name, _LARGEST_WHOLE)
    if number > most:
        raise ConfigError(f"{name} ({_flag(name)}) must be at most {most}, not {value!r}"
                          + _WHY_MOST.get(name, ""))
    return number


def parse_concurrency(value: Any) -> int | str:
    """``--concurrency``: ``"auto"``, or a whole number of at least 1 (``"8"`` taken for 8)."""
    if value == "auto":
        return "auto"
    try:
        return _whole("concurrency", value, 1)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (or 'auto', which follows the server's load)") from None


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        listed = ", ".join(repr(choice) for choice in choices)
        raise ConfigError(f"{_flag(name)} must be one of {listed}, not {value!r}")


def _real(name: str, value: Any, bounds: tuple[float, bool, float | None]) -> float:
    least, inclusive, most = bounds
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = value
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise ConfigError(f"{name} ({_flag(name)}) must be a number, not {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{name} ({_flag(name)}) must be a finite number, not {value!r}")
    low = number < least if inclusive else number <= least
    if low or (most is not None and number > most):
        what = f"{'at least' if inclusive else 'above'} {least:g}"
        what += f" and at most {most:g}" if most is not None else ""
        raise ConfigError(f"{name} ({_flag(name)}) must be {what}, not {value!r}")
    return float(number)


def _texts(name: str, value: Any) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else value
    try:
        items = tuple(items)
    except TypeError:
        items = (None,)
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{name} ({_flag(name)}) must be a text or a list of texts, "
                          f"not {value!r}")
    return items


@dataclass(frozen=True)
class RunConfig:
    """Every option of ``vbatch run``; see the README's CLI reference for their meaning."""

    input: Path
    output: Path
    base_url: str | tuple[str, ...] | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    endpoint: str = DEFAULT_ENDPOINT
    embedding_dtype: str = DEFAULT_EMBEDDING_DTYPE
    inputs_per_request: int = DEFAULT_INPUTS_PER_REQUEST
    log_every: float = DEFAULT_LOG_EVERY
    log_format: str = DEFAULT_LOG_FORMAT
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = DEFAULT_N
    concurrency: int | str = DEFAULT_CONCURRENCY
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    id_field: str = DEFAULT_ID_FIELD
    prompt_field: str = DEFAULT_PROMPT_FIELD
    system: str | None = None
    template: str | None = None
    extra_body: Mapping[str, Any] | None = None
    keep: tuple[str, ...] = ()
    input_format: str | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_base_delay: float = DEFAULT_RETRY_BASE_DELAY
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    ordered: bool = False
    retry_failed: bool = False
    force: bool = False
    on_bad_row: BadRowPolicy = DEFAULT_ON_BAD_ROW
    quiet: bool = False
    stats_json: Path | None = None
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    max_downtime: float = DEFAULT_MAX_DOWNTIME
    max_model_len: int | None = None
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    tensor_parallel_size: int = DEFAULT_TENSOR_PARALLEL_SIZE
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_restarts: int = DEFAULT_MAX_RESTARTS
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    server_args: tuple[str, ...] = ()
    on_overflow: OverflowPolicy = DEFAULT_ON_OVERFLOW
    tokenizer: str | None = None
    endpoints_file: Path | None = None
    replicas: int | None = None
    ray: bool = False
    ray_address: str | None = None
    shard_rows: int | None = None
    shard_dir: Path | None = None
    group_by_prefix: GroupByPrefix | bool = DEFAULT_GROUP_BY_PREFIX
    prefix_routing: bool = DEFAULT_PREFIX_ROUTING
    error_file: Path | None = None
    pooling: bool = False
    response_format: OutputSpec | Mapping[str, Any] | type | list[str] | None = None
    schema_field: str | None = None
    invalid_finish_reasons: tuple[str, ...] = DEFAULT_INVALID_FINISH_REASONS
    max_invalid_retries: int = DEFAULT_MAX_INVALID_RETRIES
    program: str | Callable[..., Any] | None = None
    rollouts: int = 1
    keep_calls: bool = False
    rerun_if: str | Callable[[dict[str, Any]], Any] | None = None
    time_limit: float | str | None = None
    token_budget: int | str | None = None
    max_requests: int | None = None
    cache_dir: Path | None = None
    cache_max_size: int | str = DEFAULT_CACHE_MAX_SIZE

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", Path(self.input))
        object.__setattr__(self, "output", Path(self.output))
        if self.stats_json is not None:
            object.__setattr__(self, "stats_json", Path(self.stats_json))
        self._coerce()
        if self.base_url is not None and not isinstance(self.base_url, str):
            urls = tuple(self.base_url)
            object.__setattr__(self, "base_url", urls[0] if len(urls) == 1 else urls or None)
        if self.endpoints_file is not None:
            object.__setattr__(self, "endpoints_file", Path(self.endpoints_file))
        if self.shard_dir is not None:
            object.__setattr__(self, "shard_dir", Path(self.shard_dir))
        if self.error_file is not None:
            object.__setattr__(self, "error_file", Path(self.error_file))
        if self.ray_address:
            object.__setattr__(self, "ray", True)
        if self.endpoint in ENDPOINTS and ENDPOINTS[self.endpoint].pooling:
            object.__setattr__(self, "pooling", True)
        self._validate()

    def _coerce(self) -> None:
        """Check the type of every option, taking "10" for 10 and "END" for ("END",)."""
        for name, least in _WHOLE.items():
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _whole(name, getattr(self, name), least))
        for name, bounds in _REAL.items():
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _real(name, getattr(self, name), bounds))
        for name in _TEXTS:
            object.__setattr__(self, name, _texts(name, getattr(self, name)))
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} ({_flag(name)}) must be True or False, "
                                  f"not {getattr(self, name)!r}")
        if isinstance(self.group_by_prefix, bool):
            object.__setattr__(self, "group_by_prefix", "on" if self.group_by_prefix else "off")
        object.__setattr__(self, "concurrency", parse_concurrency(self.concurrency))
        object.__setattr__(self, "response_format", spec_of_value(self.response_format))
        if self.response_format is None and isinstance(self.extra_body, Mapping):
            try:
                found = spec_of_body(dict(self.extra_body))
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"--extra-body asks for a structured output that is not "
                                  f"valid: {exc}") from None
            object.__setattr__(self, "response_format", found)

    def _validate(self) -> None:
        _choice("endpoint", self.endpoint, tuple(ENDPOINTS))
        _choice("on_overflow", self.on_overflow, ON_OVERFLOW_POLICIES)
        _choice("on_bad_row", self.on_bad_row, ON_BAD_ROW_POLICIES)
        _choice("group_by_prefix", self.group_by_prefix, GROUP_BY_PREFIX_CHOICES)
        if self.input_format is not None:
            _choice("input_format", self.input_format, INPUT_FORMATS)
        _choice("log_format", self.log_format, LOG_FORMATS)
        _choice("embedding_dtype", self.embedding_dtype, tuple(EMBEDDING_DTYPES))
        if self.template is not None and not ENDPOINTS[self.endpoint].countable:
            raise ConfigError(f"--template makes one prompt, but --endpoint {self.endpoint} "
                              "reads a pair of fields from each row (text_1 and text_2, or "
                              "query and documents)")
        if self.system is not None and not ENDPOINTS[self.endpoint].takes_messages:
            raise ConfigError(
                "--system needs --endpoint chat: the completions endpoint takes a plain prompt "
                "(put the instruction in --template instead)"
            )
        if self.rerun_if is not None:
            record_test(self.rerun_if)
        if self.time_limit is not None:
            object.__setattr__(self, "time_limit", parse_duration(self.time_limit))
        if self.token_budget is not None:
            parse_token_budget(self.token_budget)
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        parse_size(self.cache_max_size)
        if self.program is not None:
            load_program(self.program)
        elif self.rollouts != 1 or self.keep_calls:
            raise ConfigError(f"{'--rollouts' if self.rollouts != 1 else '--keep-calls'} is "
                              "for a --program run")
        if (self.response_format is not None or self.schema_field) and self.pooling:
            what = "--schema-field" if self.schema_field else "response_format"
            raise ConfigError(f"{what} shapes generated answers: --endpoint {self.endpoint} "
                              "gives vectors or scores, not text")
        if self.extra_body is not None and not isinstance(self.extra_body, Mapping):
            raise ConfigError("--extra-body must be a JSON object")
        for url in self.base_urls:
            normalize_base_url(url)
        if self.remote:
            given = [name for name in MANAGED_SERVER_OPTIONS
                     if getattr(self, name) != _FIELD_DEFAULTS[name]]
            if given:
                raise ConfigError(
                    f"{_flag(given[0])} is an option of the vLLM server vbatch starts, but "
                    "--base-url points at a running one: set it where that server is started, "
                    "or leave out --base-url to let vbatch start one")
            if self.server_args:
                raise ConfigError(
                    "arguments after -- go to the vLLM server vbatch starts, "
                    "but --base-url points at a running one"
                )
            if self.replicas is not None and not self.ray:
                raise ConfigError("--replicas starts servers: it cannot go with --base-url "
                                  "(with --ray it sets how many workers share the endpoints)")
        if not self.ray and (self.shard_rows is not None or self.shard_dir is not None):
            raise ConfigError("--shard-rows and --shard-dir split the work of a --ray run: "
                              "add --ray")
        if self.input.resolve() == self.output.resolve():
            raise ConfigError(f"the output {self.output} is the input file: choose another -o")

    @property
    def budget(self) -> Budget:
        """What the run may spend (``time_limit``, ``token_budget``, ``max_requests``)."""
        tokens, with_prompt = (parse_token_budget(self.token_budget)
                               if self.token_budget is not None else (None, False))
        limit = self.time_limit
        return Budget(float(limit) if limit is not None else None, tokens, with_prompt,
                      self.max_requests)

    @property
    def output_spec(self) -> OutputSpec | None:
        """The shape every answer must have (``response_format``, as a spec)."""
        spec = self.response_format
        return spec if isinstance(spec, OutputSpec) else None

    @property
    def resolved_api_key(self) -> str | None:
        """The API key from the option, else from ``VBATCH_API_KEY`` or ``OPENAI_API_KEY``."""
        if self.api_key:
            return self.api_key
        for name in API_KEY_ENV_VARS:
            value = os.environ.get(name)
            if value:
                return value
        return None

    @property
    def base_urls(self) -> tuple[str, ...]:
        """The ``--base-url`` values, as a tuple."""
        if self.base_url is None:
            return ()
        return (self.base_url,) if isinstance(self.base_url, str) else tuple(self.base_url)

    @property
    def remote(self) -> bool:
        """Whether the run talks to running servers (else vbatch starts one)."""
        return bool(self.base_urls) or self.endpoints_file is not None

    @property
    def openai_batch(self) -> bool:
        """Whether the input is an OpenAI Batch file (each line a whole request)."""
        return self.input_format == "openai-batch"

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some options changed."""
        return dataclasses.replace(self, **changes)


# The options of a run that are options of the vLLM servers vbatch starts, by the same name
# (servers.options.ServerOptions).
MANAGED_SERVER_OPTIONS = ("max_model_len", "gpu_memory_utilization", "tensor_parallel_size",
                           "max_num_seqs", "max_num_batched_tokens", "startup_timeout",
                           "max_restarts")
_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}
