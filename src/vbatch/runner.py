"""``run()`` / ``arun()``: the whole job, from the input file to the finished output.

The runner is the one boundary where the user's :class:`~vbatch.RunConfig` becomes the run's
settings (:func:`~vbatch.settings.settle`): it names the output's files, takes the output's
lock, copies an input that can be read only once, checks a batch file, and hands the settings
to a :class:`~vbatch.steps.Run`; a ``--ray`` run goes to :mod:`vbatch.distributed`, imported
only then.
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
from vbatch.engine.result import RunResult
from vbatch.errors import ConfigError
from vbatch.loops import event_loop_runner, in_own_thread, loop_is_running
from vbatch.output.lock import OutputLock
from vbatch.output.paths import check_log_path, check_output_path, remove_stale_spools
from vbatch.output.records import RECORD_FIELDS
from vbatch.settings import OutputPaths, batch_input, settle, source_of
from vbatch.source.openai_batch import batch_pooling, check_batch_file
from vbatch.source.spool import spooled
from vbatch.steps import Run
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
    cache: bool = False,
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
    With ``cache``, the output is a cache of answers by id (``vbatch.generate``'s ``cache=``):
    records of ids this input lacks are kept and rows that moved are matched by id, where a
    file-to-file run refuses both (see :func:`~vbatch.engine.resume.reconcile_input`).
    """
    stream = stream if stream is not None else sys.stderr
    command_started = clock()
    clashes = RECORD_FIELDS.intersection(config.keep)
    if clashes:
        raise ConfigError(f"--keep {sorted(clashes)[0]}: that name is a field of the output")
    batch = batch_input(config)
    paths = OutputPaths.of(config, batch)
    check_output_path(paths.final, paths.records, config.input, paths.stats_json,
                      paths.error_file)
    if not config.remote:
        check_log_path(paths.server_log)
    source = source_of(config, paths, batch)
    with OutputLock(paths.records), contextlib.ExitStack() as copies:
        if source.copied:
            remove_stale_spools(paths.final)
            copies.enter_context(spooled(source.given, source.path))
        pooling = False
        if batch:
            summary = await asyncio.to_thread(check_batch_file, source.path)
            pooling = batch_pooling(summary, config.input, config.remote, config.model)
        settings = settle(config, paths, source, pooling, cache)
        if config.ray:
            from vbatch.distributed.driver import run_on_ray

            return await run_on_ray(settings, handle_signals, stream, clock)
        steps = Run(settings, stream, clock, transport=transport, control=control,
                    started=command_started)
        return await steps.execute(handle_signals)
