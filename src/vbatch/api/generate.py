"""``generate`` / ``agenerate`` / ``stream``: a dataset in memory through the same run as the
CLI's, with every guarantee it has.

The rows are spooled to a JSON-lines file in a temporary directory, the run writes its records
to ``cache`` (or ``output``, or a file in that directory), and the records come back shaped
like the input (:mod:`vbatch.api.results`). ``generate`` runs the event loop in a thread of its
own, so it works the same in a script and in a notebook whose loop is already running; Ctrl-C
stops the run cleanly (in-flight rows get the shutdown grace) and raises KeyboardInterrupt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vbatch.api.models import as_model, model_of
from vbatch.api.results import in_input_order, shaped_like
from vbatch.api.rows import Spooled, input_kind, spool_rows
from vbatch.config import RunConfig
from vbatch.defaults import DEFAULT_ID_FIELD
from vbatch.engine.control import RunControl
from vbatch.engine.result import RunResult
from vbatch.errors import BudgetReachedError, ConfigError, RunStoppedError
from vbatch.loops import in_own_thread
from vbatch.options import RunOptions, with_run_options
from vbatch.output.formats import output_format
from vbatch.output.records import taken_columns
from vbatch.runner import arun
from vbatch.structured.columns import parsed_columns
from vbatch.transport.base import Transport

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["agenerate", "generate", "stream"]

# Records that may wait for a slow consumer of stream() before the run holds back.
_BACKLOG = 4096
# The temporary directories of calls: vbatch-PID-random.
_WORKDIR_PREFIX = "vbatch-"


@dataclass
class _Call:
    """One call's rows, files and options."""

    rows: Any
    kind: str
    options: dict[str, Any]
    target: Path | None
    progress: bool
    transport: Transport | None
    as_models: bool = False
    workdir: tempfile.TemporaryDirectory[str] = field(default_factory=lambda: _workdir())
    spooled: Spooled | None = None
    config: RunConfig | None = None
    models: type | None = None

    @classmethod
    def of(cls, rows: Any, cache: str | Path | None, output: str | Path | None, progress: bool,
           transport: Transport | None, options: dict[str, Any],
           as_models: bool = False) -> _Call:
        for name in ("input", "output"):
            if name in options:
                raise ConfigError(f"{name}= is not an option of vbatch.generate: the rows are "
                                  "its input; give cache= (or output=) for where records go")
        if cache is not None and output is not None:
            raise ConfigError("give cache= or output=, not both: both say where the records go")
        given = cache if cache is not None else output
        target = Path(given) if given is not None else None
        kind = input_kind(rows)
        if as_models and kind != "records":
            raise ConfigError("as_models=True gives pydantic objects in a list of records; a "
                              f"{kind} input gets the schema's fields as typed columns instead")
        return cls(rows, kind, options, target, progress, transport, as_models)

    @property
    def output(self) -> Path:
        """The run's output: the caller's file, else one in the temporary directory."""
        return self.target or Path(self.workdir.name) / "records.jsonl"

    @property
    def journal(self) -> Path:
        """Where the records are, as they are written."""
        return output_format(self.output).journal(self.output)

    def spool(self) -> RunConfig:
        """Write the rows; returns the run's options."""
        spool = Path(self.workdir.name) / "input.jsonl"
        id_field = self.options.get("id_field", DEFAULT_ID_FIELD)
        self.spooled = spool_rows(self.rows, self.kind, spool, id_field)
        quiet = self.options.pop("quiet", False) or not self.progress
        self.config = RunConfig(input=spool, output=self.output, quiet=quiet, **self.options)
        self.models = model_of(self.config.output_spec) if self.as_models else None
        return self.config

    def records(self) -> list[dict[str, Any] | None]:
        """The records of the spooled rows, in input order."""
        assert self.spooled is not None, "spool() first"
        records = in_input_order(self.journal, self.spooled)
        if self.models is not None and self.config is not None:
            for record in records:
                if record is not None:
                    as_model(record, self.models, self.config.n > 1)
        return records

    def shaped(self) -> Any:
        """The records shaped like the rows: a table's ``parsed`` in typed columns."""
        assert self.config is not None, "spool() first"
        config = self.config
        parsed = parsed_columns(config.output_spec, taken_columns(config.keep), config.n)
        return shaped_like(self.rows, self.kind, self.records(), parsed)

    def close(self) -> None:
        self.workdir.cleanup()


def _workdir() -> tempfile.TemporaryDirectory[str]:
    """A temporary directory for one call's spool and records, named after this process;
    those that killed processes left behind (kill -9 skips the clean-up) go first."""
    _remove_stale_workdirs(Path(tempfile.gettempdir()))
    return tempfile.TemporaryDirectory(prefix=f"{_WORKDIR_PREFIX}{os.getpid()}-")


def _remove_stale_workdirs(where: Path) -> None:
    """Remove this user's call directories in ``where`` whose process is gone."""
    for path in where.glob(f"{_WORKDIR_PREFIX}*-*"):
        pid = path.name[len(_WORKDIR_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or path.stat().st_uid != os.getuid() or not path.is_dir():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


async def _run(call: _Call, control: RunControl) -> RunResult:
    config = await asyncio.to_thread(call.spool)
    if control.on_record is not None and call.target is not None:
        for record in await asyncio.to_thread(call.records):
            if record is not None:
                control.on_record(record)
    result = await arun(config, stream=sys.stderr, transport=call.transport, control=control,
                        cache=True)
    kept = f"; the records so far are in {call.journal}" if call.target else ""
    if result.budget is not None:
        raise BudgetReachedError(f"budget reached ({result.budget}): {result.stats.done} rows "
                                 f"recorded this run{kept}; the same call carries on")
    if result.interrupted:
        raise RunStoppedError(f"stopped: {result.stats.done} rows recorded this run{kept}")
    return result


@with_run_options
async def agenerate(rows: Any, *, cache: str | Path | None = None,
                    output: str | Path | None = None, progress: bool = True,
                    as_models: bool = False, transport: Transport | None = None,
                    _control: RunControl | None = None, **options: Unpack[RunOptions]) -> Any:
    """:func:`generate` on the running event loop."""
    call = _Call.of(rows, cache, output, progress, transport, dict(options), as_models)
    control = _control or RunControl()
    task = asyncio.current_task()
    if task is not None:
        control.bind(task)
    try:
        await _run(call, control)
        return call.shaped()
    finally:
        call.close()


@with_run_options
def generate(rows: Any, *, cache: str | Path | None = None, output: str | Path | None = None,
             progress: bool = True, as_models: bool = False,
             transport: Transport | None = None, **options: Unpack[RunOptions]) -> Any:
    """Run every row through the model and give the records back shaped like ``rows``.

    ``rows``: prompts (``str``) or rows (``dict``, like a JSONL line: ``prompt``, ``messages``,
    template fields, ``id``) in a list or any iterable (read lazily), a pandas DataFrame, a
    pyarrow Table or RecordBatchReader, or a ``datasets.Dataset``. Returns a list of records
    in input order, or the DataFrame / Table / Dataset with the result columns added. Options
    are :class:`~vbatch.RunConfig`'s (``base_url``, ``model``, ``max_tokens``, ``template``,
    ...); without ``base_url`` a vLLM server is started for the call (see
    :class:`vbatch.Server` to keep one for many calls). ``cache`` (or ``output``, which may end
    in ``.parquet``) is a vbatch output file: a call that finds records there sends only the
    rows that have none. ``progress=False`` prints nothing. A row that fails is a record with
    ``status`` ``failed``; bad options raise :class:`~vbatch.ConfigError`.

    ``response_format`` (a pydantic model class, a JSON Schema dict, :class:`vbatch.Choice`,
    :class:`vbatch.Regex`, ...) asks every answer to have that shape and checks it: a record's
    ``parsed`` holds the value (``as_models=True``: the pydantic object, for a list input), a
    DataFrame, Table or Dataset gets the schema's fields as typed columns.
    """
    control = RunControl()
    return _in_own_loop(lambda: agenerate(rows, cache=cache, output=output, progress=progress,
                                          as_models=as_models, transport=transport,
                                          _control=control, **options),
                        control)


def _in_own_loop(make: Callable[[], Coroutine[Any, Any, Any]], control: RunControl) -> Any:
    """Run ``make()`` in a thread of its own; Ctrl-C here stops it cleanly, then raises."""
    value, error, interrupted = in_own_thread(make, control.stop)
    stopped = error is None or isinstance(error, RunStoppedError | asyncio.CancelledError)
    if interrupted and stopped:
        raise KeyboardInterrupt(str(error) if error is not None else "vbatch stopped")
    if error is not None:
        raise error
    return value


class _Backlog:
    """Records waiting for the consumer of :func:`stream`; past ``limit`` of them, the run
    takes no new row until the consumer catches up."""

    def __init__(self, limit: int):
        self.records: deque[dict[str, Any]] = deque()
        self.limit = limit
        self.arrived = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()

    def put(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.arrived.set()
        if len(self.records) >= self.limit:
            self.room.clear()

    async def ready(self) -> None:
        await self.room.wait()

    def take(self) -> list[dict[str, Any]]:
        taken = list(self.records)
        self.records.clear()
        self.arrived.clear()
        self.room.set()
        return taken


@with_run_options
async def stream(rows: Any, *, cache: str | Path | None = None,
                 output: str | Path | None = None, progress: bool = False,
                 as_models: bool = False, transport: Transport | None = None,
                 **options: Unpack[RunOptions]) -> AsyncIterator[dict[str, Any]]:
    """Each record as it is written (completion order; ``index`` says the row), for rows and
    options as :func:`generate` takes them. With ``cache``, the records it already holds for
    these rows come first (a row whose request changed, resent with ``force=True``, comes
    again with its new record). A consumer that falls behind holds the run back, so memory
    stays bounded; leaving the loop early stops the run."""
    call = _Call.of(rows, cache, output, progress, transport, dict(options), as_models)
    backlog = _Backlog(limit=_BACKLOG)
    control = RunControl(on_record=backlog.put, ready=backlog.ready)
    task = asyncio.create_task(_run(call, control))
    control.bind(task)
    try:
        while True:
            arrived = asyncio.create_task(backlog.arrived.wait())
            await asyncio.wait({arrived, task}, return_when=asyncio.FIRST_COMPLETED)
            arrived.cancel()
            for record in backlog.take():
                yield (as_model(record, call.models, call.options.get("n", 1) > 1)
                       if call.models is not None else record)
            if task.done() and not backlog.records:
                task.result()
                return
    finally:
        if not task.done():
            control.stop()
            with contextlib.suppress(asyncio.CancelledError, RunStoppedError):
                await task
        call.close()
