"""One run, in two steps: ``prepare`` (check, count, resume state) and ``execute`` (send)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from array import array
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TextIO

from vbatch.cache.store import ResponseCache, parse_size
from vbatch.defaults import DEFAULT_START_CONCURRENCY
from vbatch.engine.breaker import CircuitBreaker
from vbatch.engine.budget import BudgetGuard
from vbatch.engine.concurrency import AdaptiveController, ConcurrencyLimit
from vbatch.engine.control import RunControl
from vbatch.engine.dispatch import Dispatcher
from vbatch.engine.items import Pack, WorkItem, packed
from vbatch.engine.monitor import LoadMonitor
from vbatch.engine.pending import PendingRows
from vbatch.engine.progress import Progress, RunGauges, show_check
from vbatch.engine.result import RunResult, report_run
from vbatch.engine.reuse import Reuse
from vbatch.engine.stats import RunStats
from vbatch.engine.timeline import Timeline
from vbatch.errors import OutputWriteError
from vbatch.output.manifest import write_manifest
from vbatch.output.writer import ResultWriter
from vbatch.prepare.builder import RequestBuilder
from vbatch.prepare.scan import CheckCount
from vbatch.prepare.tokens import TokenCounter
from vbatch.settings import OutputPaths, RunSettings
from vbatch.source.shards import Shard
from vbatch.transport.pool import ServerPool

# Seconds the last poll of the servers' metrics may take as the run ends.
_LAST_POLL_S = 2.0



class Driven(Protocol):
    """What drives a program run's dispatcher (:class:`vbatch.programs.driver.ProgramDriver`):
    rows whose programs run, the drive itself, and the end (``complete``: every row ok)."""

    active: int

    async def drive(self, submit: Callable[[WorkItem], Awaitable[dict[str, Any] | None]],
                    emit: Callable[[dict[str, Any]], None]) -> None: ...

    def close(self, complete: bool) -> None: ...


class Job:
    """A run of ``settings`` with requests built by ``builder`` (over one ``shard`` of the
    input, its records in ``paths``, for a Ray worker): prepare, then execute; the driver of a
    Ray run only prepares. ``report``: the job finishes the output the user named (its final
    file, timeline, ``--stats-json``)."""

    def __init__(
        self,
        settings: RunSettings,
        builder: RequestBuilder,
        stream: TextIO,
        clock: Callable[[], float],
        shard: Shard | None = None,
        paths: OutputPaths | None = None,
        control: RunControl | None = None,
        started: float | None = None,
        report: bool = True,
    ):
        self.settings = settings
        self.options = settings.options
        self.paths = paths or settings.paths
        self.report = report
        self.control = control
        self.builder = builder
        self.stream = stream
        self.clock = clock
        self.shard = shard
        self.params = settings.requests.generation_params(builder.model)
        self.pending = PendingRows(settings, self.paths.records, builder, self.params, self.say,
                                   shard)
        self.context: int | None = None
        self.stats: RunStats | None = None
        self._dispatcher: Dispatcher | None = None
        # Set once sending has every row in flight or done (or ended): a Ray worker starts
        # its next shard then, so that the server does not drain between shards.
        self.all_taken = asyncio.Event()
        # The bound (or its controller) this job shares with others: a Ray worker's shards,
        # two of which send at once as one ends. None: the job makes its own.
        self.shared_bound: AdaptiveController | ConcurrencyLimit | None = None
        self._progress: Progress | None = None
        # When the command began (its summary's wall time counts from here).
        self.created = clock() if started is None else started
        # The served model's identity, for the response cache (--cache-dir).
        self.model_identity = ""
        # Seconds the phases before sending took: "setup" (the model, the output's lock),
        # "check" (the tokenizer and the input), "server start".
        self.phases: dict[str, float] = {}

    def say(self, text: str) -> None:
        """A progress message on the stream (above the live view), unless quiet."""
        if self.options.quiet:
            return
        if self._progress is not None:
            self._progress.say(text)
            return
        self.stream.write(f"vbatch: {text}\n")
        self.stream.flush()

    @property
    def total(self) -> int:
        """Rows of the input (of the shard), once prepared."""
        return self.pending.total

    async def prepare(self, counter: TokenCounter | None) -> None:
        """Check the manifest, repair and read the output, check (and count) the input,
        showing how far the check is once it takes over a second."""
        checked = CheckCount()
        watcher = asyncio.create_task(show_check(
            checked, self.settings.source.given.name, self.stream, self.progress_mode(),
            self.options.log_every, self.clock))
        try:
            await self.pending.prepare(counter, checked)
        finally:
            await _cancelled([watcher])

    async def adopt(self, done_bits: bytes, prompt_tokens: array[int] | None) -> None:
        """Take a checked shard from the driver: rows already done, prompt tokens by row."""
        await self.pending.adopt(done_bits, prompt_tokens)

    def set_context(self, context: int | None) -> None:
        """Fit rows to a context of ``context`` tokens; ``fail`` stops here when some don't."""
        self.pending.check_fit(context)
        self.context = context

    async def execute(
        self,
        pool: ServerPool,
        handle_signals: bool,
        recover: Callable[[], Awaitable[bool]] | None,
        program: Driven | None = None,
    ) -> RunResult:
        """Send every row not yet recorded and write the records; a program run's calls are
        what ``program`` submits (:mod:`vbatch.programs`)."""
        if self.shard is None:
            write_manifest(self.paths.records, self.settings.source.path, self.params)
        stats = self.new_stats()
        self.stats = stats
        self.say_resuming()
        writer = ResultWriter(self.paths.records, clock=self.clock)
        writer.open()

        watcher = self.control.on_record if self.control is not None else None

        def sink(record: dict[str, Any]) -> None:
            try:
                writer.add(record)
            except OutputWriteError:
                dispatcher.abandon()
                raise
            stats.add(record)
            if watcher is not None:
                watcher(record)

        send = self.settings.send
        controller = self._controller(stats)
        # The controller this job steers itself: a shared one is steered by its owner.
        steered = controller if controller is not self.shared_bound else None
        cache = self._cache()
        guard: BudgetGuard | None = None
        if send.budget.any:
            guard = BudgetGuard(send.budget, stats, self.clock, self.created,
                                lambda: dispatcher.requests_sent, lambda: dispatcher.stop(),
                                self.control.ready if self.control is not None else None)
        dispatcher = self._dispatcher = self._make_dispatcher(pool, sink, recover, controller,
                                                              guard, cache)
        monitor = LoadMonitor(pool.load, self.clock)
        gauges = RunGauges(lambda: dispatcher.in_flight,
                           lambda: controller.bound.limit if controller else send.pool_size,
                           monitor, pool.servers,
                           (lambda: program.active) if program is not None else None,
                           guard.describe if guard is not None else None)
        progress, timeline = self._observers(stats, gauges)
        stats.start()
        background = [asyncio.create_task(_checkpoints(writer, dispatcher)),
                      asyncio.create_task(progress.run())]
        if steered is not None:
            background.append(asyncio.create_task(steered.run(monitor.load)))
        if guard is not None:
            background.append(asyncio.create_task(guard.watch()))
        if timeline is not None:
            timeline.open()
            background.append(asyncio.create_task(timeline.run()))
        restore = install_signal_handlers(dispatcher.stop) if handle_signals else None
        if self.control is not None:
            self.control.sending(dispatcher.stop)
        try:
            if program is not None:
                await dispatcher.run_driven(program.drive)
            elif dispatcher.reuse is not None:
                await dispatcher.run(dispatcher.reuse.ready(self._work()))
            else:
                await dispatcher.run(self._work())
        finally:
            if program is not None:
                program.close(complete=not (dispatcher.interrupted or stats.missing
                                            or dispatcher.aborted or stats.failed
                                            or stats.already_failed))
            if restore is not None:
                restore()
            if cache is not None:
                cache.close()
            await _cancelled(background)
            stats.finish()
            if timeline is not None:
                # The servers' counters as the run ends, for the timeline's last sample.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(monitor.load(fresh=True), _LAST_POLL_S)
                timeline.close()
            progress.close()
            self._progress = None
            writer.close()
        if len(pool.servers) > 1:
            stats.endpoints = pool.summary()
        if steered is not None:
            stats.concurrency_trace = [
                {**vars(sample), "t": round(sample.t - stats.started, 3)}
                for sample in steered.trace
            ]
        budget = guard.reason if guard is not None else None
        stats.budget_reached = budget
        result = RunResult(stats, interrupted=dispatcher.interrupted and not dispatcher.aborted,
                           failures_are_lines=self.settings.openai_batch, budget=budget)
        self.finish(result)
        dispatcher.raise_if_aborted()
        return result

    def _observers(self, stats: RunStats, gauges: RunGauges) -> tuple[Progress, Timeline | None]:
        """The live view (quiet when nothing is left to send) and the timeline of the output
        the user named (none for a Ray worker's shard)."""
        mode = "quiet" if self.pending.already >= self.total else self.progress_mode()
        progress = self._progress = Progress(stats, self.stream, mode=mode,
                                             log_interval_s=self.options.log_every,
                                             gauges=gauges)
        if not self.report or self.paths.timeline is None:
            return progress, None
        return progress, Timeline(self.paths.timeline, stats, gauges.monitor,
                                  gauges.servers, gauges.in_flight, gauges.bound, self.say)

    def _work(self) -> Iterable[WorkItem | Pack | dict[str, Any]]:
        """What the dispatcher sends: the rows still to do, in packs where the endpoint kind
        takes several inputs per request (``--inputs-per-request``)."""
        work = self.pending.work(self.context)
        size = self.settings.requests.inputs_per_request
        return packed(work, size) if self.builder.kind.packs and size > 1 else work

    def _cache(self) -> ResponseCache | None:
        """The response cache of ``--cache-dir``, said to reuse nothing when the rows' requests
        sample without a seed."""
        options, requests = self.options, self.settings.requests
        if options.cache_dir is None:
            return None
        if (requests.temperature != 0 and requests.seed is None and requests.program is None
                and not self.settings.openai_batch):
            self.say("--cache-dir: the requests sample without a seed (give --temperature 0 or "
                     "--seed): no answer will be reused or kept")
        return ResponseCache(options.cache_dir, parse_size(options.cache_max_size))

    def _controller(self, stats: RunStats) -> AdaptiveController | None:
        """The controller this job shares (a Ray worker's), else one of its own."""
        if self.shared_bound is not None:
            return self.shared_bound if isinstance(self.shared_bound, AdaptiveController) else None
        return run_controller(self.settings, self.clock, lambda: stats.done)

    def _make_dispatcher(self, pool: ServerPool, sink: Callable[[dict[str, Any]], None],
                         recover: Callable[[], Awaitable[bool]] | None,
                         controller: AdaptiveController | None,
                         guard: BudgetGuard | None, cache: ResponseCache | None) -> Dispatcher:
        return Dispatcher(
            pool, self.builder.route, sink, self.builder.kind, self.settings.send,
            n=self.settings.requests.n, clock=self.clock, recover=recover, context=self.context,
            bound=(controller.bound if controller is not None
                   else self.shared_bound if isinstance(self.shared_bound, ConcurrencyLimit)
                   else None),
            breaker=CircuitBreaker(),
            gate=(guard.gate if guard is not None
                  else self.control.ready if self.control is not None else None),
            reuse=(Reuse(cache, self.model_identity, self.builder.route)
                   if cache is not None else None),
            all_taken=self.all_taken,
        )

    def stop(self) -> None:
        """Stop sending, as SIGINT does: in-flight rows get the shutdown grace."""
        if self._dispatcher is not None:
            self._dispatcher.stop()

    def say_resuming(self) -> None:
        """Say how many rows the output already holds, if any."""
        if self.pending.already >= self.total:
            self.say(f"nothing to send: all {self.total} rows already have a record in "
                     f"{self.paths.records}")
        elif self.pending.already:
            self.say(f"resuming: {self.pending.already} of {self.total} rows are already in "
                     f"{self.paths.records}")

    def new_stats(self) -> RunStats:
        """Statistics for a run of this job, with what earlier runs did."""
        return RunStats(clock=self.clock, total_rows=self.total,
                        already_done=self.pending.already,
                        already_failed=self.pending.already_failed,
                        rerun=self.pending.rerun,
                        command_started=self.created, phases=dict(self.phases))

    def progress_mode(self) -> str:
        """``bar`` on a terminal, ``log`` lines otherwise (``json`` lines with --log-format
        json), ``quiet`` with --quiet."""
        if self.options.quiet:
            return "quiet"
        if self.options.log_format == "json":
            return "json"
        return "bar" if self.stream.isatty() else "log"

    def finish(self, result: RunResult) -> None:
        """Order the output (``--ordered``), write ``--stats-json`` and print the summary."""
        report_run(self.paths, self.options.quiet, result, self.say, self.stream,
                   final=self.report)

async def _checkpoints(writer: ResultWriter, dispatcher: Dispatcher) -> None:
    """The writer's checkpoints; the first write that fails stops sending at once (no answer
    can be recorded any more): the run then ends with the writer's error."""
    try:
        await writer.run_checkpoints()
    except OutputWriteError:
        dispatcher.abandon()
        raise


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


def run_controller(settings: RunSettings, clock: Callable[[], float],
                   done: Callable[[], int]) -> AdaptiveController | None:
    """The controller of ``--concurrency auto``, else None. A pooling run has none: its
    requests finish in milliseconds, so vLLM's running and waiting gauges (sampled once a
    second) stay near zero and say nothing of its load; the bound is fixed at
    ``--max-concurrency``."""
    send = settings.send
    if not send.adaptive or settings.pooling:
        return None
    bound = ConcurrencyLimit(min(DEFAULT_START_CONCURRENCY, send.max_concurrency))
    return AdaptiveController(bound, maximum=send.max_concurrency, clock=clock, done=done)
