"""``run()`` / ``arun()``: the whole job, from the input file to the finished output."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from vbatch.client import HTTPClient
from vbatch.config import RunConfig, normalize_base_url
from vbatch.endpoints import PROBE_TIMEOUT_S, Endpoint, EndpointPool, read_endpoints_file
from vbatch.errors import ConfigError, HTTPStatusError, RequestError
from vbatch.fit import fitting_limit
from vbatch.job import Job, RunResult
from vbatch.model import DEFAULT_MODEL_NAME, prepare_default_model
from vbatch.output_lock import OutputLock
from vbatch.outputs import check_output_path
from vbatch.requests import RequestBuilder
from vbatch.server import ManagedServer
from vbatch.server_options import ServerOptions, replica_options
from vbatch.spool import spooled
from vbatch.tokens import (
    BoundedTokenCounter,
    LocalTokenCounter,
    RemoteTokenCounter,
    TokenCounter,
    model_context_limit,
)

OUTPUT_FIELDS = frozenset(
    {"id", "index", "status", "text", "finish_reason", "usage", "error", "attempts", "latency_s",
     "logprobs", "clamped_max_tokens", "context_truncated"}
)

__all__ = ["RunResult", "arun", "discover_model", "run"]


def run(config: RunConfig, **kwargs: Any) -> RunResult:
    """Run the job to the end; see :func:`arun` for the arguments."""
    kwargs.setdefault("handle_signals", threading.current_thread() is threading.main_thread())
    result: RunResult = _event_loop_runner()(arun(config, **kwargs))
    return result


def _event_loop_runner() -> Callable[[Any], Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    runner: Callable[[Any], Any] = uvloop.run
    return runner


async def arun(
    config: RunConfig,
    *,
    handle_signals: bool = False,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RunResult:
    """Run the job on the current event loop.

    Without ``config.base_url``, vbatch starts a vLLM server for the run (the embedded
    default model unless ``config.model`` names one), sized to the data, watches it,
    restarts it if it dies and stops it at the end. Every row is fitted to the server's
    context (``config.on_overflow``). With ``handle_signals``, SIGINT and SIGTERM stop the
    run cleanly: no new rows are taken, in-flight rows get ``config.shutdown_grace`` seconds
    (a second signal abandons them at once), the output is flushed and the result says
    ``interrupted``. The run holds a lock on its output from start to end: a second run on
    the same output fails at once (:class:`OutputLockedError`). An input that can be read
    only once (``-`` for stdin, a pipe) is copied beside the output first. With
    ``config.ray``, the rows are spread over Ray actors (one per replica, each with its own
    server or the given endpoints) and merged at the end.
    """
    stream = stream if stream is not None else sys.stderr
    clashes = OUTPUT_FIELDS.intersection(config.keep)
    if clashes:
        raise ConfigError(f"--keep {sorted(clashes)[0]}: that name is a field of the output")
    check_output_path(config)
    with OutputLock(config.output), spooled(config) as readable:
        if readable.ray:
            from vbatch.ray_driver import run_on_ray

            return await run_on_ray(readable, handle_signals, stream, clock)
        if readable.remote:
            return await _run_remote(readable, handle_signals, stream, clock)
        return await _run_managed(readable, handle_signals, stream, clock)


def make_endpoint(config: RunConfig, root: str, api: str, api_key: str | None,
                  weight: float = 1.0, credentials: str | None = None) -> Endpoint:
    """An endpoint for the server at ``root`` whose OpenAI API is at ``api``; ``credentials``
    (``user:password``) for basic authentication where no API key is given."""
    probe = HTTPClient(root, api_key=api_key, pool_size=4, timeout=PROBE_TIMEOUT_S,
                       credentials=credentials)
    client = HTTPClient(root, api_key=api_key, pool_size=config.pool_size,
                        timeout=config.request_timeout, credentials=credentials)
    return Endpoint(url=api, client=client, probe=probe, prefix=api[len(root):], weight=weight)


def remote_endpoints(config: RunConfig) -> list[Endpoint]:
    """The running servers of ``--base-url`` and ``--endpoints``."""
    listed = [(url, 1.0) for url in config.base_urls]
    if config.endpoints_file is not None:
        listed += read_endpoints_file(config.endpoints_file)
    key = config.resolved_api_key
    urls = [(normalize_base_url(url), weight) for url, weight in listed]
    return [make_endpoint(config, u.root, u.api, key, weight, u.credentials)
            for u, weight in urls]


async def remote_job(config: RunConfig, pool: EndpointPool, stream: TextIO,
                     clock: Callable[[], float], job_config: RunConfig | None = None
                     ) -> tuple[Job, TokenCounter | None, str, int | None]:
    """The job for the running servers of ``pool`` (its options ``job_config``, else
    ``config``), its token counter, and the model and context found at the first server."""
    first = pool.first
    model, limit = await discover_model(first.client, first.prefix, config.model)
    job = Job(job_config or config, RequestBuilder(config, model), stream, clock)
    counter = await token_counter(config, first.client, model, job, limit) if limit else None
    return job, counter, model, limit


async def _run_remote(config: RunConfig, handle_signals: bool, stream: TextIO,
                      clock: Callable[[], float]) -> RunResult:
    async with EndpointPool(remote_endpoints(config)) as pool:
        job, counter, _, limit = await remote_job(config, pool, stream, clock)
        await job.prepare(counter)
        job.set_limit(limit if counter is not None else None)
        return await job.execute(pool, handle_signals, pool.recover)


async def token_counter(config: RunConfig, client: HTTPClient, model: str, job: Job,
                         limit: int) -> TokenCounter | None:
    """The local tokenizer when the model is known here, else the server's ``/tokenize``."""
    local = config.tokenizer
    if local is None and config.model and Path(config.model).is_dir():
        local = config.model
    if local:
        return fitting_counter(config, local, limit)
    counter = RemoteTokenCounter(client, model, asyncio.get_running_loop())
    try:
        await counter.count_async([{"prompt": "hello"}])
    except RequestError as exc:
        job.say(f"cannot count tokens with {client.base}/tokenize ({exc}); rows are not fitted "
                "to the context before sending (give --tokenizer to count them here)")
        return None
    return BoundedTokenCounter(lambda: counter, fits_within(config, limit))


def fits_within(config: RunConfig, limit: int) -> Callable[[int], bool]:
    """Whether a row of so many prompt tokens fits ``limit`` with the max_tokens asked."""
    asked = config.max_tokens or 1
    return lambda tokens: tokens + asked <= limit


def fitting_counter(config: RunConfig, tokenizer: str, limit: int | None) -> TokenCounter:
    """The counter that fits rows to ``limit`` (exact counts throughout when it is not known
    yet: the context is then sized from them); the tokenizer loads only when needed."""
    if limit is None:
        return LocalTokenCounter(tokenizer)
    return BoundedTokenCounter(lambda: LocalTokenCounter(tokenizer), fits_within(config, limit))


async def managed_counter(config: RunConfig, model: str) -> TokenCounter:
    """The counter for the input of a managed server loading ``model``."""
    return await asyncio.to_thread(fitting_counter, config, config.tokenizer or model,
                                   config.max_model_len)


async def managed_model(config: RunConfig) -> tuple[str, str | None]:
    """The model a managed server loads, and the name it serves it under (if not that)."""
    if config.model is not None:
        return config.model, None
    return str(await asyncio.to_thread(prepare_default_model)), DEFAULT_MODEL_NAME


def server_options(config: RunConfig, model: str, served_name: str | None) -> ServerOptions:
    """The managed server of ``config``, loading ``model``."""
    return ServerOptions(
        model=model,
        served_model_name=served_name,
        log_path=config.output.with_name(config.output.name + ".server.log"),
        api_key=secrets.token_urlsafe(24),
        max_model_len=config.max_model_len,
        gpu_memory_utilization=config.gpu_memory_utilization,
        tensor_parallel_size=config.tensor_parallel_size,
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
        extra_args=config.server_args,
        startup_timeout=config.startup_timeout,
        max_restarts=config.max_restarts,
    )


async def _run_managed(config: RunConfig, handle_signals: bool, stream: TextIO,
                       clock: Callable[[], float]) -> RunResult:
    model, served_name = await managed_model(config)
    options = server_options(config, model, served_name)
    job = Job(config, RequestBuilder(config, options.name), stream, clock)
    async with contextlib.AsyncExitStack() as stack:
        if config.max_model_len is not None:
            # The context is known: start the servers while the input is checked.
            starting = asyncio.create_task(_start_servers(stack, config, options, stream))
            try:
                await _prepare_managed(job, model)
            except BaseException:
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                raise
            servers = await starting
        else:
            limit = await _prepare_managed(job, model)
            options = dataclasses.replace(options, max_model_len=limit)
            servers = await _start_servers(stack, config, options, stream)
        endpoints = [make_endpoint(config, s.root_url, s.api_url, s.api_key) for s in servers]
        pool = await stack.enter_async_context(EndpointPool(endpoints))
        recover = servers[0].recover if len(servers) == 1 else pool.recover
        return await job.execute(pool, handle_signals, recover)


async def _prepare_managed(job: Job, model: str) -> int | None:
    """Check and count the input; returns the context the rows are fitted to."""
    config = job.config
    await job.prepare(await managed_counter(config, model))
    limit = config.max_model_len or limit_from_data(job, model)
    job.set_limit(limit)
    return limit


async def _start_servers(stack: contextlib.AsyncExitStack, config: RunConfig,
                         options: ServerOptions, stream: TextIO) -> list[ManagedServer]:
    count = config.replicas or 1
    servers = [ManagedServer(replica_options(options, i, count), stream=stream,
                             quiet=config.quiet) for i in range(count)]
    await asyncio.gather(*(stack.enter_async_context(server) for server in servers))
    return servers


def limit_from_data(job: Job, model: str) -> int | None:
    """``--max-model-len`` from the longest prompt and ``max_tokens``, within the model's."""
    model_limit = model_context_limit(model)
    counts = job.prompt_tokens
    if counts is None or counts.size == 0 or job.config.max_tokens is None:
        return model_limit
    limit = fitting_limit(int(counts.max()) + job.config.max_tokens, model_limit)
    job.say(f"--max-model-len {limit}: fits the longest prompt ({int(counts.max())} tokens) "
            f"with max_tokens {job.config.max_tokens}"
            + (f" (the model allows {model_limit})" if model_limit else ""))
    return limit


async def discover_model(client: HTTPClient, prefix: str, wanted: str | None
                         ) -> tuple[str, int | None]:
    """The model to use and its ``max_model_len``, from ``/v1/models``."""
    where = client.base + prefix
    try:
        listing = await client.get_json(prefix + "/models")
    except RequestError as exc:
        if isinstance(exc, HTTPStatusError) and exc.status_code in (401, 403):
            raise ConfigError(
                f"{where} refused the API key (HTTP {exc.status_code}): check --api-key, "
                "VBATCH_API_KEY or OPENAI_API_KEY"
            ) from None
        if wanted:
            return wanted, None
        raise ConfigError(
            f"cannot list the models of {where} ({exc}): is the server up? "
            "Give --model to skip this check."
        ) from None
    models = {m.get("id"): m for m in listing.get("data", []) if isinstance(m, dict)}
    if wanted is None:
        if not models:
            raise ConfigError(f"{where} serves no model: give --model")
        if len(models) > 1:
            names = ", ".join(map(str, models))
            raise ConfigError(f"{where} serves several models ({names}): give --model")
        wanted = str(next(iter(models)))
    elif models and wanted not in models:
        names = ", ".join(map(str, models))
        raise ConfigError(f"{where} does not serve the model {wanted!r} (it serves {names}): "
                          "check --model")
    limit = (models.get(wanted) or {}).get("max_model_len")
    return wanted, limit if isinstance(limit, int) else None
