"""``run()`` / ``arun()``: the whole job, from the input file to the finished output.

The runner takes the output's lock, copies an input that can be read only once, chooses the
backend (:func:`~vbatch.servers.factory.make_backend`), prepares the job and executes it; a
``--ray`` run goes to :mod:`vbatch.distributed`, imported only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from vbatch.config import RunConfig
from vbatch.engine.control import RunControl
from vbatch.engine.job import Job
from vbatch.engine.report import Final, RunResult
from vbatch.errors import ConfigError
from vbatch.loops import event_loop_runner, in_own_thread, loop_is_running
from vbatch.output.formats import output_format
from vbatch.output.formats.openai_batch import OpenAIBatch
from vbatch.output.lock import OutputLock
from vbatch.output.paths import check_output_path
from vbatch.output.records import RECORD_FIELDS
from vbatch.prepare.factory import request_builder
from vbatch.servers.factory import make_backend
from vbatch.source.openai_batch import as_batch_run, check_batch_file, pooling_run
from vbatch.source.spool import spooled
from vbatch.transport.base import Transport

__all__ = ["RunResult", "arun", "run"]


def run(config: RunConfig, **kwargs: Any) -> RunResult:
    """Run the job to the end; see :func:`arun` for the arguments. Called where an event loop
    already runs (a notebook cell), the job runs on a loop in a thread of its own, and Ctrl-C
    stops it as SIGINT stops the CLI."""
    if loop_is_running():
        control = kwargs.setdefault("control", RunControl())
        kwargs["handle_signals"] = False
        value, error, _ = in_own_thread(lambda: arun(config, **kwargs), control.stop)
        if error is not None:
            raise error
        threaded: RunResult = value
        return threaded
    kwargs.setdefault("handle_signals", threading.current_thread() is threading.main_thread())
    result: RunResult = event_loop_runner()(arun(config, **kwargs))
    return result


async def arun(
    config: RunConfig,
    *,
    handle_signals: bool = False,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    transport: Transport | None = None,
    control: RunControl | None = None,
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
    server or the given endpoints) and merged at the end. ``transport`` replaces the network
    for every request (an in-process server double, see :mod:`vbatch.testing.fake`);
    ``control`` follows the records as they are written and stops the run from outside.
    """
    stream = stream if stream is not None else sys.stderr
    command_started = clock()
    clashes = RECORD_FIELDS.intersection(config.keep)
    if clashes:
        raise ConfigError(f"--keep {sorted(clashes)[0]}: that name is a field of the output")
    config = as_batch_run(config)
    fmt = OpenAIBatch(config.error_file) if config.openai_batch else output_format(config.output)
    check_output_path(config, fmt)
    final = Final(fmt, config.output)
    journaled = config.replace(output=fmt.journal(config.output))
    with OutputLock(journaled.output), spooled(journaled) as readable:
        if readable.openai_batch:
            summary = await asyncio.to_thread(check_batch_file, readable.input)
            readable = pooling_run(readable, summary)
        if readable.ray:
            from vbatch.distributed.driver import run_on_ray

            return await run_on_ray(readable, handle_signals, stream, clock, final)
        backend = make_backend(readable, stream, transport)
        async with contextlib.AsyncExitStack() as stack:
            await backend.resolve(stack)
            job = Job(readable, request_builder(readable, backend.request_model), stream, clock,
                      final=final, control=control, started=command_started)
            job.phases["setup"] = clock() - command_started
            started = await backend.connect(stack, job)
            return await job.execute(started.pool, handle_signals, started.recover)
