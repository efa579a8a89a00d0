"""The options of a run as keyword arguments: :class:`RunOptions` for type checkers and IDEs,
and the signatures of the Python API's functions, both following :class:`~vbatch.RunConfig`.

``vbatch.generate(rows, max_tokens=64, base_url=URL)`` takes every field of ``RunConfig`` but
its ``input`` and ``output`` (the rows are the input, ``cache=`` the output);
``tests/test_api_signatures.py`` checks that :class:`RunOptions` lists exactly those fields
with the same types, so the two cannot drift.
"""

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar

from vbatch.config import RunConfig
from vbatch.structured.specs import OutputSpec

__all__ = ["RunOptions", "with_run_options"]

# RunConfig's fields that a call of the Python API does not take as options.
NOT_OPTIONS = ("input", "output")


class RunOptions(TypedDict, total=False):
    """Every option of a run, as keyword arguments (:class:`~vbatch.RunConfig`'s fields)."""

    base_url: str | tuple[str, ...] | None
    model: str | None
    api_key: str | None
    endpoint: str
    embedding_dtype: str
    inputs_per_request: int
    log_every: float
    log_format: str
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    seed: int | None
    stop: tuple[str, ...]
    n: int
    concurrency: int | str
    max_concurrency: int
    id_field: str
    prompt_field: str
    system: str | None
    template: str | None
    extra_body: Mapping[str, Any] | None
    keep: tuple[str, ...]
    input_format: str | None
    max_retries: int
    retry_base_delay: float
    request_timeout: float
    ordered: bool
    retry_failed: bool
    force: bool
    on_bad_row: Literal["fail", "skip"]
    quiet: bool
    stats_json: Path | None
    shutdown_grace: float
    max_downtime: float
    max_model_len: int | None
    gpu_memory_utilization: float
    tensor_parallel_size: int
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    max_restarts: int
    startup_timeout: float
    server_args: tuple[str, ...]
    on_overflow: Literal["clamp", "skip", "fail"]
    tokenizer: str | None
    endpoints_file: Path | None
    replicas: int | None
    ray: bool
    ray_address: str | None
    shard_rows: int | None
    shard_dir: Path | None
    group_by_prefix: Literal["auto", "on", "off"] | bool
    prefix_routing: bool
    error_file: Path | None
    pooling: bool
    response_format: OutputSpec | Mapping[str, Any] | type | list[str] | None
    schema_field: str | None
    invalid_finish_reasons: tuple[str, ...]
    max_invalid_retries: int
    program: str | Callable[..., Any] | None
    rollouts: int
    keep_calls: bool
    rerun_if: str | Callable[[dict[str, Any]], Any] | None
    time_limit: float | str | None
    token_budget: int | str | None
    max_requests: int | None
    cache_dir: Path | None
    cache_max_size: int | str


Function = TypeVar("Function", bound=Callable[..., Any])


def with_run_options(function: Function) -> Function:
    """``function`` (taking ``**options: Unpack[RunOptions]``) with a signature that names
    every option, its type and its default, as ``help()`` and IDEs show it."""
    signature = inspect.signature(function)
    kept = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    hints = RunOptions.__annotations__
    options = [
        inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default,
                          annotation=hints[field.name])
        for field in dataclasses.fields(RunConfig) if field.name not in NOT_OPTIONS
    ]
    function.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*kept, *options])
    return function
