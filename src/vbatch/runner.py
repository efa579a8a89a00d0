"""``run()`` / ``arun()``: the whole job, from the input file to the finished output."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

from vbatch.client import HTTPClient
from vbatch.config import RunConfig, normalize_base_url
from vbatch.dispatch import Dispatcher, WorkItem
from vbatch.errors import ConfigError, RequestError
from vbatch.ledger import done_mask, is_set, read_output
from vbatch.manifest import check_manifest, write_manifest
from vbatch.model import DEFAULT_MODEL_NAME, prepare_default_model
from vbatch.progress import Progress
from vbatch.readers import read_rows
from vbatch.records import failed_record
from vbatch.requests import RequestBuilder
from vbatch.scan import check_row, scan_input
from vbatch.server import ManagedServer
from vbatch.server_options import ServerOptions
from vbatch.stats import RunStats
from vbatch.writer import ResultWriter, write_in_input_order

OUTPUT_FIELDS = frozenset(
    {"id", "index", "status", "text", "finish_reason", "usage", "error", "attempts", "latency_s",
     "logprobs"}
)


@dataclass
class RunResult:
    """What a finished run did."""

    stats: RunStats
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """0 when every row is ok, 1 when some failed, 130 when interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.stats.failed or self.stats.already_failed else 0


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
    default model unless ``config.model`` names one), watches it, restarts it if it dies and
    stops it at the end. With ``handle_signals``, SIGINT and SIGTERM stop the run cleanly:
    no new rows are taken, in-flight rows get ``config.shutdown_grace`` seconds (a second
    signal abandons them at once), the output is flushed and the result says ``interrupted``.
    """
    stream = stream if stream is not None else sys.stderr
    clashes = OUTPUT_FIELDS.intersection(config.keep)
    if clashes:
        raise ConfigError(f"--keep {sorted(clashes)[0]}: that name is a field of the output")
    if config.base_url is not None:
        urls = normalize_base_url(config.base_url)
        return await _run_on(config, urls.api, config.resolved_api_key, None, None,
                             handle_signals, stream, clock)
    options = await managed_server_options(config)
    async with ManagedServer(options, stream=stream, quiet=config.quiet) as server:
        return await _run_on(config, server.api_url, server.api_key, options.name, server,
                             handle_signals, stream, clock)


async def managed_server_options(config: RunConfig) -> ServerOptions:
    """How to start the server for a run without ``--base-url``."""
    model = config.model
    served_name = None
    if model is None:
        model = str(await asyncio.to_thread(prepare_default_model))
        served_name = DEFAULT_MODEL_NAME
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


async def _run_on(
    config: RunConfig,
    api_url: str,
    api_key: str | None,
    model: str | None,
    server: ManagedServer | None,
    handle_signals: bool,
    stream: TextIO,
    clock: Callable[[], float],
) -> RunResult:
    async with HTTPClient(
        api_url, api_key=api_key, pool_size=config.concurrency, timeout=config.request_timeout
    ) as client:
        model = model or config.model or await discover_model(client, api_url)
        job = _Job(config, RequestBuilder(config, model), stream, clock)
        recover = server.recover if server is not None else None
        return await job.execute(client, handle_signals, recover)


async def discover_model(client: HTTPClient, where: str) -> str:
    """The one model a server serves, from ``/v1/models``."""
    try:
        listing = await client.get_json("/models")
    except RequestError as exc:
        raise ConfigError(
            f"cannot list the models of {where} ({exc}): is the server up? "
            "Give --model to skip this check."
        ) from None
    models = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)]
    if len(models) == 1 and isinstance(models[0], str):
        return models[0]
    if not models:
        raise ConfigError(f"{where} serves no model: give --model")
    names = ", ".join(map(str, models))
    raise ConfigError(f"{where} serves several models ({names}): give --model")


class _Job:
    def __init__(
        self, config: RunConfig, builder: RequestBuilder, stream: TextIO, clock: Callable[[], float]
    ):
        self.config = config
        self.builder = builder
        self.stream = stream
        self.clock = clock
        self.params = {**config.generation_params(), "model": builder.model}

    def _say(self, text: str) -> None:
        if not self.config.quiet:
            self.stream.write(f"vbatch: {text}\n")
            self.stream.flush()

    async def execute(
        self,
        client: HTTPClient,
        handle_signals: bool,
        recover: Callable[[], Awaitable[bool]] | None,
    ) -> RunResult:
        config = self.config
        check_manifest(config.output, self.params, force=config.force)
        state = read_output(config.output, retry_failed=config.retry_failed)
        if state.repaired_bytes:
            self._say(
                f"repaired a torn last line in {config.output} ({state.repaired_bytes} bytes)"
            )
        self._say(f"checking {config.input}")
        scan = scan_input(config, self.builder)
        mask, already = done_mask(scan.id_hashes, state)
        del scan.id_hashes
        write_manifest(config.output, config.input, self.params)
        stats = RunStats(
            clock=self.clock,
            total_rows=scan.total,
            already_done=already,
            already_failed=state.failed,
        )
        if already:
            self._say(f"resuming: {already} of {scan.total} rows are already in {config.output}")
        writer = ResultWriter(config.output, clock=self.clock)
        writer.open()

        def sink(record: dict[str, Any]) -> None:
            writer.add(record)
            stats.add(record)

        dispatcher = Dispatcher(
            client,
            self.builder.route,
            sink,
            endpoint=config.endpoint,
            n=config.n,
            concurrency=config.concurrency,
            max_retries=config.max_retries,
            retry_base_delay=config.retry_base_delay,
            shutdown_grace=config.shutdown_grace,
            clock=self.clock,
            recover=recover,
        )
        progress = Progress(stats, self.stream, mode=self._progress_mode())
        stats.start()
        background = [
            asyncio.create_task(writer.run_checkpoints()),
            asyncio.create_task(progress.run()),
        ]
        restore = _install_signal_handlers(dispatcher.stop) if handle_signals else None
        try:
            await dispatcher.run(self._work(mask))
        finally:
            if restore is not None:
                restore()
            for task in background:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*background, return_exceptions=True)
            writer.close()
            stats.finish()
            progress.close()
        result = RunResult(stats, interrupted=dispatcher.interrupted)
        self._finish(result)
        return result

    def _progress_mode(self) -> str:
        if self.config.quiet:
            return "quiet"
        return "bar" if self.stream.isatty() else "log"

    def _work(self, mask: bytes) -> Iterator[WorkItem | dict[str, Any]]:
        builder = self.builder
        keep_fields = self.config.keep
        for row in read_rows(self.config.input, self.config.input_format):
            if is_set(mask, row.index):
                continue
            checked = check_row(builder, row)
            data = row.data or {}
            keep = {name: data.get(name) for name in keep_fields} if keep_fields else None
            if checked.error is not None:
                record = failed_record(checked.row_id, row.index, checked.error)
                record["attempts"] = 0
                record["latency_s"] = None
                if keep:
                    record.update(keep)
                yield record
                continue
            assert checked.content is not None
            yield WorkItem(checked.row_id, row.index, builder.body(checked.content), keep)

    def _finish(self, result: RunResult) -> None:
        config = self.config
        if config.ordered and not result.interrupted:
            self._say(f"writing {config.output} in input order")
            write_in_input_order(config.output)
        if config.stats_json is not None:
            config.stats_json.write_bytes(
                orjson.dumps(result.stats.to_dict(), option=orjson.OPT_INDENT_2)
            )
        if not config.quiet:
            self.stream.write(result.stats.summary_text() + "\n")
        if result.interrupted:
            self._say(
                f"interrupted: {result.stats.done} rows recorded this run, kept in "
                f"{config.output}. Run the same command again to resume."
            )


def _install_signal_handlers(stop: Callable[[], None]) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop)

    def restore() -> None:
        for sig in signals:
            loop.remove_signal_handler(sig)

    return restore
