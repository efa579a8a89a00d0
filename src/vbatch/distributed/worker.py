"""One replica of a Ray run: a vLLM server and the shards the driver hands it.

A :class:`ShardWorker` is a plain class; the driver wraps it with ``ray.remote`` and
places one per replica. It starts its own managed vLLM server on its node (or uses the
given endpoints) and runs each shard it is handed as a :class:`~vbatch.engine.job.Job` of its
own, writing the shard's records to ``SHARD_DIR/shard-NNNNN.jsonl``. A shard file is
append-only like any output: if the worker dies, the next worker given that shard skips
what the file already holds.

The driver may hand a worker its next shard while one runs: the next one waits until every
row of the one before is in flight or done, then starts sending, so the server's queue stays
full across the boundary instead of draining with each shard's last requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

from vbatch.engine.concurrency import AdaptiveController, ConcurrencyLimit
from vbatch.engine.job import Job, run_controller
from vbatch.engine.monitor import LoadMonitor
from vbatch.engine.result import RunResult
from vbatch.engine.stats import RunStats
from vbatch.output.formats.jsonl import JsonLines
from vbatch.servers.backend import Replica, Started
from vbatch.settings import OutputPaths, RunSettings
from vbatch.source.shards import Shard
from vbatch.steps import Run


@dataclass(frozen=True)
class WorkerPlan:
    """What every worker of a run shares: settings (their paths absolute), the model's name,
    the context."""

    settings: RunSettings
    request_model: str
    context: int | None
    replicas_per_node: int


@dataclass
class LiveCounts:
    """What a worker's running shard has recorded, for the driver's progress bar."""

    ok: int = 0
    failed: int = 0
    completion_tokens: int = 0


class ShardWorker:
    """Runs shards against its own vLLM server (or the given endpoints)."""

    def __init__(self, plan: WorkerPlan, replica: int):
        self.plan = plan
        self.replica = replica
        self._run = Run(plan.settings, io.StringIO(), time.monotonic,
                        request_model=plan.request_model, report=False)
        self._stack = contextlib.AsyncExitStack()
        self._started: Started | None = None
        self._jobs: list[Job] = []  # the shards sending now (two while one ends)
        self._ahead: asyncio.Event | None = None  # what the next shard waits for
        # One bound over all of them, so that two never send more than one would.
        self._bound: AdaptiveController | ConcurrencyLimit | None = None
        self._stopping = False

    def node(self) -> str:
        """This worker's node: its host name and the start of its Ray node id."""
        import ray

        return f"{socket.gethostname()}, node {ray.get_runtime_context().get_node_id()[:8]}"

    def reaches(self, probe: str, token: str) -> str | None:
        """Whether this node sees the file ``probe`` the driver wrote with ``token`` in the
        shard directory, and can write beside it: None, or what is wrong."""
        path = Path(probe)
        try:
            if path.read_text() != token:
                return "a file the driver wrote there holds something else here"
        except OSError as exc:
            return f"a file the driver wrote there cannot be read here ({exc.strerror})"
        mine = path.with_name(f"{path.name}.{self.replica}")
        try:
            mine.write_text(token)
            os.unlink(mine)
        except OSError as exc:
            return f"it cannot be written here ({exc.strerror})"
        return None

    async def start(self) -> str:
        """Start the server (or connect to the endpoints); returns where this worker runs."""
        await self._run.resolve(self._stack)
        replica = Replica(self.replica, self.plan.replicas_per_node)
        started = self._started = await self._run.start(self._stack, self.plan.context, replica)
        settings = self.plan.settings
        controller = run_controller(settings, time.monotonic, self._done)
        if controller is None:
            self._bound = ConcurrencyLimit(settings.send.pool_size)
        else:
            self._bound = controller
            monitor = LoadMonitor(started.pool.load, time.monotonic)
            steering = asyncio.create_task(controller.run(monitor.load))
            self._stack.callback(steering.cancel)
        urls = ", ".join(server.url for server in started.pool.servers)
        return f"{self.node()} ({urls})"

    async def run_shard(self, shard: Shard, done_bits: bytes,
                        prompt_tokens: array[int] | None) -> RunResult:
        """Run the rows of ``shard`` not marked in ``done_bits``, once every row of the shard
        handed out before it is in flight or done."""
        assert self._started is not None, "start() first"
        records = self.plan.settings.paths.shards / f"{shard.name}.jsonl"
        job = self._run.job(shard, OutputPaths.for_shard(records, JsonLines()))
        job.shared_bound = self._bound
        before, self._ahead = self._ahead, job.all_taken
        try:
            await job.adopt(done_bits, prompt_tokens)
            job.set_context(self.plan.context)
            if before is not None:
                await before.wait()
            if self._stopping:
                return RunResult(RunStats(clock=time.monotonic, total_rows=shard.rows),
                                 interrupted=True)
            self._jobs.append(job)
            try:
                return await self._run.send(job, self._started, False)
            finally:
                self._jobs.remove(job)
        finally:
            job.all_taken.set()

    async def live(self) -> LiveCounts:
        """Rows recorded so far by the shards sending now."""
        counts = LiveCounts()
        for job in self._jobs:
            if job.stats is not None:
                counts.ok += job.stats.ok
                counts.failed += job.stats.failed
                counts.completion_tokens += job.stats.completion_tokens
        return counts

    async def interrupt(self) -> None:
        """Stop the running shards as SIGINT would; later shards are not started."""
        self._stopping = True
        for job in self._jobs:
            job.stop()

    def _done(self) -> int:
        return sum(job.stats.done for job in self._jobs if job.stats is not None)

    async def stop(self) -> None:
        """Stop the server and close the connections."""
        await self._stack.aclose()
