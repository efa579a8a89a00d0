"""One run, in two steps: ``prepare`` (check, count, resume state) and ``execute`` (send)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import orjson

from vbatch.concurrency import AdaptiveController, ConcurrencyLimit
from vbatch.config import RunConfig
from vbatch.dispatch import Dispatcher, WorkItem
from vbatch.endpoints import EndpointPool
from vbatch.errors import ConfigError, ContextOverflowError
from vbatch.fit import fit_row
from vbatch.ledger import done_mask, is_set, read_output
from vbatch.manifest import check_manifest, write_manifest
from vbatch.plan import ids_of, not_fitting
from vbatch.progress import Progress
from vbatch.readers import read_rows
from vbatch.records import failed_record
from vbatch.requests import RequestBuilder
from vbatch.scan import InputScan, check_row, scan_input
from vbatch.stats import RunStats
from vbatch.tokens import TokenCounter
from vbatch.writer import ResultWriter, write_in_input_order


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


START_CONCURRENCY = 256


class Job:
    """A run of ``config`` with requests built by ``builder``."""

    def __init__(
        self,
        config: RunConfig,
        builder: RequestBuilder,
        stream: TextIO,
        clock: Callable[[], float],
    ):
        self.config = config
        self.builder = builder
        self.stream = stream
        self.clock = clock
        self.params = {**config.generation_params(), "model": builder.model}
        self.limit: int | None = None
        self._scan: InputScan | None = None
        self._mask = b""
        self._already = 0
        self._already_failed = 0

    def say(self, text: str) -> None:
        """A progress message on the stream, unless quiet."""
        if not self.config.quiet:
            self.stream.write(f"vbatch: {text}\n")
            self.stream.flush()

    @property
    def prompt_tokens(self) -> np.ndarray | None:
        """Prompt tokens by row, when counted."""
        if self._scan is None or self._scan.prompt_tokens is None:
            return None
        return np.asarray(self._scan.prompt_tokens, dtype=np.int64)

    async def prepare(self, counter: TokenCounter | None) -> None:
        """Check the manifest, repair and read the output, check (and count) the input."""
        config = self.config
        check_manifest(config.output, self.params, force=config.force)
        state = read_output(config.output, retry_failed=config.retry_failed)
        if state.repaired_bytes:
            self.say(f"repaired a torn last line in {config.output} ({state.repaired_bytes} bytes)")
        counting = " and counting prompt tokens" if counter is not None else ""
        self.say(f"checking {config.input}{counting}")
        scan = await asyncio.to_thread(scan_input, config, self.builder, counter)
        if scan.counting_error:
            self.say(f"counting prompt tokens failed ({scan.counting_error}); rows are not "
                     "fitted to the context before sending")
        self._mask, self._already = done_mask(scan.id_hashes, state)
        self._already_failed = state.failed
        scan.id_hashes = np.empty(0, np.int64)
        self._scan = scan

    def set_limit(self, limit: int | None) -> None:
        """Fit rows to a context of ``limit`` tokens; ``fail`` stops here when some don't."""
        self.limit = limit
        counts = self.prompt_tokens
        if limit is None or counts is None or self.config.on_overflow != "fail":
            return
        offending = not_fitting(counts, self.config.max_tokens, limit)
        if offending.size:
            shown = ids_of(self.config, self.builder, offending, counts)
            listed = ", ".join(f"{row_id} ({tokens} tokens)" for row_id, tokens in shown)
            more = f" and {offending.size - len(shown)} more" if offending.size > len(shown) else ""
            raise ConfigError(
                f"{offending.size} rows do not fit a context of {limit} tokens with max_tokens "
                f"{self.config.max_tokens}: {listed}{more}. Nothing was sent. Use "
                "--on-overflow clamp or skip, a larger --max-model-len, or a smaller --max-tokens."
            )

    async def execute(
        self,
        pool: EndpointPool,
        handle_signals: bool,
        recover: Callable[[], Awaitable[bool]] | None,
    ) -> RunResult:
        """Send every row not yet recorded and write the records."""
        config = self.config
        scan = self._scan
        assert scan is not None, "prepare() first"
        write_manifest(config.output, config.input, self.params)
        stats = RunStats(clock=self.clock, total_rows=scan.total, already_done=self._already,
                         already_failed=self._already_failed)
        if self._already:
            self.say(f"resuming: {self._already} of {scan.total} rows are already in "
                     f"{config.output}")
        writer = ResultWriter(config.output, clock=self.clock)
        writer.open()

        def sink(record: dict[str, Any]) -> None:
            writer.add(record)
            stats.add(record)

        controller = None
        bound = None
        if config.concurrency == "auto":
            bound = ConcurrencyLimit(min(START_CONCURRENCY, config.max_concurrency))
            controller = AdaptiveController(bound, maximum=config.max_concurrency,
                                            clock=self.clock, done=lambda: stats.done)
        dispatcher = Dispatcher(
            pool, self.builder.route, sink, endpoint=config.endpoint, n=config.n,
            concurrency=config.pool_size, max_retries=config.max_retries,
            retry_base_delay=config.retry_base_delay, shutdown_grace=config.shutdown_grace,
            clock=self.clock, recover=recover, limit=self.limit,
            clamp=config.on_overflow == "clamp", bound=bound,
        )
        progress = Progress(stats, self.stream, mode=self._progress_mode())
        stats.start()
        background = [asyncio.create_task(writer.run_checkpoints()),
                      asyncio.create_task(progress.run())]
        if controller is not None:
            background.append(asyncio.create_task(controller.run(pool.load)))
        restore = _install_signal_handlers(dispatcher.stop) if handle_signals else None
        try:
            await dispatcher.run(self._work())
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
        if len(pool.endpoints) > 1:
            stats.endpoints = pool.summary()
        if controller is not None:
            stats.concurrency_trace = [
                {**vars(sample), "t": round(sample.t - stats.started, 3)}
                for sample in controller.trace
            ]
        result = RunResult(stats, interrupted=dispatcher.interrupted)
        self._finish(result)
        return result

    def _progress_mode(self) -> str:
        if self.config.quiet:
            return "quiet"
        return "bar" if self.stream.isatty() else "log"

    def _work(self) -> Iterator[WorkItem | dict[str, Any]]:
        builder = self.builder
        config = self.config
        keep_fields = config.keep
        scan = self._scan
        counts = scan.prompt_tokens if scan is not None else None
        limit = self.limit if counts is not None else None
        for row in read_rows(config.input, config.input_format):
            if is_set(self._mask, row.index):
                continue
            checked = check_row(builder, row)
            data = row.data or {}
            fields = {name: data.get(name) for name in keep_fields}
            if checked.error is not None:
                yield _unsent(failed_record(checked.row_id, row.index, checked.error), fields)
                continue
            assert checked.content is not None
            tokens = counts[row.index] if counts is not None else None
            max_tokens = config.max_tokens
            if limit is not None and tokens is not None:
                fit = fit_row(tokens, max_tokens, limit, config.on_overflow)
                if fit.problem is not None:
                    error = ContextOverflowError(fit.problem)
                    yield _unsent(failed_record(checked.row_id, row.index, error), fields)
                    continue
                if fit.clamped:
                    max_tokens = fit.max_tokens
                    fields["clamped_max_tokens"] = max_tokens
            body = builder.body(checked.content, max_tokens)
            yield WorkItem(checked.row_id, row.index, body, fields, tokens, max_tokens)

    def _finish(self, result: RunResult) -> None:
        config = self.config
        if config.ordered and not result.interrupted:
            self.say(f"writing {config.output} in input order")
            write_in_input_order(config.output)
        if config.stats_json is not None:
            config.stats_json.write_bytes(
                orjson.dumps(result.stats.to_dict(), option=orjson.OPT_INDENT_2)
            )
        if not config.quiet:
            self.stream.write(result.stats.summary_text() + "\n")
        if result.interrupted:
            self.say(f"interrupted: {result.stats.done} rows recorded this run, kept in "
                     f"{config.output}. Run the same command again to resume.")


def _unsent(record: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    record["attempts"] = 0
    record["latency_s"] = None
    record.update(fields)
    return record


def _install_signal_handlers(stop: Callable[[], None]) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop)

    def restore() -> None:
        for sig in signals:
            loop.remove_signal_handler(sig)

    return restore
