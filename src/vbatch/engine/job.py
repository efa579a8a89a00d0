"""One run, in two steps: ``prepare`` (check, count, resume state) and ``execute`` (send)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from array import array
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TextIO

import numpy as np
import orjson

from vbatch.config import RunConfig
from vbatch.defaults import DEFAULT_START_CONCURRENCY
from vbatch.engine.breaker import CircuitBreaker
from vbatch.engine.concurrency import AdaptiveController, ConcurrencyLimit
from vbatch.engine.dispatch import Dispatcher, WorkItem
from vbatch.engine.progress import Progress
from vbatch.engine.resume import replace_changed, say_repairs
from vbatch.engine.stats import RunStats
from vbatch.engine.work import work_items
from vbatch.errors import ConfigError, write_failure
from vbatch.output.formats import output_format
from vbatch.output.ledger import done_mask, read_output
from vbatch.output.manifest import check_manifest, write_manifest
from vbatch.output.writer import ResultWriter
from vbatch.prepare.builder import RequestBuilder
from vbatch.prepare.fit import not_fitting
from vbatch.prepare.plan import ids_of
from vbatch.prepare.scan import InputScan, RowSource, scan_input
from vbatch.prepare.tokens import TokenCounter
from vbatch.source.prefix import check_groupable
from vbatch.source.readers import read_rows
from vbatch.source.shards import Shard, read_shard
from vbatch.transport.pool import ServerPool


@dataclass
class RunResult:
    """What a finished run did."""

    stats: RunStats
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """0 when every input row has an ok record, 1 when some failed or have no record,
        130 when interrupted."""
        if self.interrupted:
            return 130
        stats = self.stats
        return 1 if stats.failed or stats.already_failed or stats.missing else 0


class Job:
    """A run of ``config`` with requests built by ``builder``."""

    def __init__(
        self,
        config: RunConfig,
        builder: RequestBuilder,
        stream: TextIO,
        clock: Callable[[], float],
        shard: Shard | None = None,
    ):
        self.config = config
        self.builder = builder
        self.stream = stream
        self.clock = clock
        self.shard = shard
        self._rows: RowSource = (
            partial(read_shard, config.input, config.input_format, shard) if shard is not None
            else partial(read_rows, config.input, config.input_format)
        )
        self._first_row = shard.first_row if shard is not None else 0
        self.params = {**config.generation_params(), "model": builder.model}
        self.limit: int | None = None
        self._scan: InputScan | None = None
        self._mask = b""
        self._already = 0
        self._already_failed = 0
        self.stats: RunStats | None = None
        self._dispatcher: Dispatcher | None = None

    def say(self, text: str) -> None:
        """A progress message on the stream, unless quiet."""
        if not self.config.quiet:
            self.stream.write(f"vbatch: {text}\n")
            self.stream.flush()

    @property
    def total(self) -> int:
        """Rows of the input (of the shard), once prepared."""
        assert self._scan is not None, "prepare() first"
        return self._scan.total

    @property
    def done_mask(self) -> bytes:
        """One packed bit per row, set where the output already has its record."""
        return self._mask

    @property
    def prompt_token_counts(self) -> array[int] | None:
        """Prompt tokens by row (4 bytes each), when counted."""
        return self._scan.prompt_tokens if self._scan is not None else None

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
        say_repairs(state, config.output, self.say)
        if config.group_by_prefix:
            check_groupable(config.input, config.input_format)
        counting = " and counting prompt tokens" if counter is not None else ""
        self.say(f"checking {config.input}{counting}")
        scan = await asyncio.to_thread(scan_input, config, self.builder, counter, self._rows,
                                       bool(state.done_hashes.size))
        self._follow_prefix_order(scan)
        if scan.counting_error:
            self.say(f"counting prompt tokens failed ({scan.counting_error}); rows are not "
                     "fitted to the context before sending")
        state = replace_changed(config, self.builder, scan, state, self.say)
        self._mask, self._already = done_mask(scan.id_hashes, state)
        self._already_failed = state.failed
        scan.id_hashes = np.empty(0, np.int64)
        scan.fingerprints = None
        self._scan = scan

    async def adopt(self, done_bits: bytes, prompt_tokens: array[int] | None) -> None:
        """Take a checked shard from the driver: rows already done, prompt tokens by row.

        Rows this shard's own output already holds (a worker died on it) are skipped too.
        """
        assert self.shard is not None, "adopt() runs a shard"
        rows = self.shard.rows
        state = read_output(self.config.output, retry_failed=False)
        say_repairs(state, self.config.output, self.say)
        done = np.unpackbits(np.frombuffer(done_bits, np.uint8), count=rows).astype(bool)
        if state.done_hashes.size or self.config.group_by_prefix:
            scan = await asyncio.to_thread(scan_input, self.config, self.builder, None,
                                           self._rows)
            if state.done_hashes.size:
                done |= np.isin(scan.id_hashes, state.done_hashes)
            self._follow_prefix_order(scan)
        self._mask = np.packbits(done).tobytes()
        self._already = int(np.count_nonzero(done))
        self._already_failed = state.failed
        self._scan = InputScan(rows, 0, np.empty(0, np.int64), prompt_tokens)

    def _follow_prefix_order(self, scan: InputScan) -> None:
        """With ``--group-by-prefix``, read the rows in the order the scan found."""
        if scan.prefix_order is not None:
            order = scan.prefix_order.order()
            self._rows = partial(scan.prefix_order.rows, self.config.input, order,
                                 self._first_row)

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
        pool: ServerPool,
        handle_signals: bool,
        recover: Callable[[], Awaitable[bool]] | None,
    ) -> RunResult:
        """Send every row not yet recorded and write the records."""
        config = self.config
        assert self._scan is not None, "prepare() first"
        if self.shard is None:
            write_manifest(config.output, config.input, self.params)
        stats = self.new_stats()
        self.stats = stats
        self.say_resuming()
        writer = ResultWriter(config.output, clock=self.clock)
        writer.open()

        def sink(record: dict[str, Any]) -> None:
            writer.add(record)
            stats.add(record)

        controller = self._controller(stats)
        dispatcher = self._dispatcher = self._make_dispatcher(pool, sink, recover, controller)
        progress = Progress(stats, self.stream, mode=self.progress_mode())
        stats.start()
        background = [asyncio.create_task(writer.run_checkpoints()),
                      asyncio.create_task(progress.run())]
        if controller is not None:
            background.append(asyncio.create_task(controller.run(pool.load)))
        restore = install_signal_handlers(dispatcher.stop) if handle_signals else None
        try:
            await dispatcher.run(self._work())
        finally:
            if restore is not None:
                restore()
            await _cancelled(background)
            stats.finish()
            progress.close()
            writer.close()
        if len(pool.servers) > 1:
            stats.endpoints = pool.summary()
        if controller is not None:
            stats.concurrency_trace = [
                {**vars(sample), "t": round(sample.t - stats.started, 3)}
                for sample in controller.trace
            ]
        result = RunResult(stats, interrupted=dispatcher.interrupted and not dispatcher.aborted)
        self.finish(result)
        dispatcher.raise_if_aborted()
        return result

    def _controller(self, stats: RunStats) -> AdaptiveController | None:
        """The controller of ``--concurrency auto``, else None."""
        config = self.config
        if config.concurrency != "auto":
            return None
        bound = ConcurrencyLimit(min(DEFAULT_START_CONCURRENCY, config.max_concurrency))
        return AdaptiveController(bound, maximum=config.max_concurrency, clock=self.clock,
                                  done=lambda: stats.done)

    def _make_dispatcher(self, pool: ServerPool, sink: Callable[[dict[str, Any]], None],
                         recover: Callable[[], Awaitable[bool]] | None,
                         controller: AdaptiveController | None) -> Dispatcher:
        config = self.config
        return Dispatcher(
            pool, self.builder.route, sink, kind=self.builder.kind, n=config.n,
            concurrency=config.pool_size, max_retries=config.max_retries,
            retry_base_delay=config.retry_base_delay, shutdown_grace=config.shutdown_grace,
            clock=self.clock, recover=recover, limit=self.limit,
            clamp=config.on_overflow == "clamp",
            bound=controller.limit if controller is not None else None,
            breaker=CircuitBreaker(), max_downtime=config.max_downtime,
        )

    def stop(self) -> None:
        """Stop sending, as SIGINT does: in-flight rows get the shutdown grace."""
        if self._dispatcher is not None:
            self._dispatcher.stop()

    def say_resuming(self) -> None:
        """Say how many rows the output already holds, if any."""
        if self._already:
            self.say(f"resuming: {self._already} of {self.total} rows are already in "
                     f"{self.config.output}")

    def new_stats(self) -> RunStats:
        """Statistics for a run of this job, with what earlier runs did."""
        return RunStats(clock=self.clock, total_rows=self.total, already_done=self._already,
                        already_failed=self._already_failed)

    def progress_mode(self) -> str:
        """``bar`` on a terminal, ``log`` otherwise, ``quiet`` with --quiet."""
        if self.config.quiet:
            return "quiet"
        return "bar" if self.stream.isatty() else "log"

    def _work(self) -> Iterator[WorkItem | dict[str, Any]]:
        counts = self._scan.prompt_tokens if self._scan is not None else None
        return work_items(self.config, self.builder, self._rows(), self._mask,
                          self._first_row, counts, self.limit)

    def finish(self, result: RunResult) -> None:
        """Order the output (``--ordered``), write ``--stats-json`` and print the summary."""
        config = self.config
        if not result.interrupted:
            if config.ordered:
                self.say(f"writing {config.output} in input order")
            output_format(config.output).finish(config.output, config.ordered)
        if config.stats_json is not None:
            try:
                config.stats_json.write_bytes(
                    orjson.dumps(result.stats.to_dict(), option=orjson.OPT_INDENT_2)
                )
            except OSError as exc:
                raise write_failure(config.stats_json, exc) from None
        if not config.quiet:
            self.stream.write(result.stats.summary_text() + "\n")
        if result.interrupted:
            self.say(f"interrupted: {result.stats.done} rows recorded this run, kept in "
                     f"{config.output}. Run the same command again to resume.")


async def _cancelled(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until they have stopped."""
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)


def install_signal_handlers(stop: Callable[[], None]) -> Callable[[], None]:
    """Call ``stop`` on SIGINT and SIGTERM; returns the function that undoes this."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop)

    def restore() -> None:
        for sig in signals:
            loop.remove_signal_handler(sig)

    return restore
