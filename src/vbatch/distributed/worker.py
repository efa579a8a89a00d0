"""One replica of a Ray run: a vLLM server and the shards the driver hands it.

A :class:`ShardWorker` is a plain class; the driver wraps it with ``ray.remote`` and
places one per replica. It starts its own managed vLLM server on its node (or uses the
given endpoints) and runs each shard it is handed as a :class:`~vbatch.engine.job.Job` of its
own, writing the shard's records to ``SHARD_DIR/shard-NNNNN.jsonl``. A shard file is
append-only like any output: if the worker dies, the next worker given that shard skips
what the file already holds.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

from vbatch.engine.job import Job
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
        self._job: Job | None = None
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
        urls = ", ".join(server.url for server in started.pool.servers)
        return f"{self.node()} ({urls})"

    async def run_shard(self, shard: Shard, done_bits: bytes,
                        prompt_tokens: array[int] | None) -> RunResult:
        """Run the rows of ``shard`` not marked in ``done_bits``."""
        assert self._started is not None, "start() first"
        records = self.plan.settings.paths.shards / f"{shard.name}.jsonl"
        job = self._run.job(shard, OutputPaths.for_shard(records, JsonLines()))
        await job.adopt(done_bits, prompt_tokens)
        job.set_context(self.plan.context)
        self._job = job
        if self._stopping:
            return RunResult(RunStats(clock=time.monotonic, total_rows=shard.rows),
                             interrupted=True)
        try:
            return await self._run.send(job, self._started, False)
        finally:
            self._job = None

    async def live(self) -> LiveCounts:
        """Rows recorded so far by the shard running now."""
        running = self._job.stats if self._job is not None else None
        if running is None:
            return LiveCounts()
        return LiveCounts(running.ok, running.failed, running.completion_tokens)

    async def interrupt(self) -> None:
        """Stop the running shard as SIGINT would; later shards are not started."""
        self._stopping = True
        if self._job is not None:
            self._job.stop()

    async def stop(self) -> None:
        """Stop the server and close the connections."""
        await self._stack.aclose()
