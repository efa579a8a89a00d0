"""``--ray``: the same job spread over Ray actors, one per replica, across a cluster.

The driver checks the input once (as a single-process run does: bad rows, duplicate ids,
prompt tokens, what the output already holds), splits it into shards, and starts one
:class:`~vbatch.distributed.worker.ShardWorker` actor per replica. Shards are handed out one at a
time to whichever actor is free, so a slow actor takes fewer; a dead actor's shard goes to
another, which skips what the dead one recorded. Shard outputs live in a directory every
node reaches; at the end they are merged into the output, each row once. A rerun after a
crash of the driver or of a node first merges what the shard files hold, then redoes only
the rows that have no record.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import secrets
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from vbatch.distributed.worker import LiveCounts, ShardWorker, WorkerPlan
from vbatch.engine.job import Job, install_signal_handlers
from vbatch.engine.progress import Progress
from vbatch.engine.result import RunResult
from vbatch.engine.stats import RunStats
from vbatch.engine.timeline import Timeline
from vbatch.errors import ConfigError, OutputError, VbatchError
from vbatch.output.manifest import write_manifest
from vbatch.output.merge import done_bits, merge_shards
from vbatch.settings import RunSettings
from vbatch.source.shards import Shard, plan_shards
from vbatch.steps import Run
from vbatch.transport.pool import read_endpoints_file

_POLL_S = 0.5
_SHARDS_PER_WORKER = 8
_SHARDS_AHEAD = 2  # shards an actor holds: the one sending and the next
_MIN_SHARD_ROWS = 100
_MAX_SHARD_ROWS = 100_000


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'vbatch[ray]'") from None
    return ray


@dataclass
class _Prepared:
    job: Job
    request_model: str
    context: int | None


async def run_on_ray(settings: RunSettings, handle_signals: bool, stream: TextIO,
                     clock: Callable[[], float]) -> RunResult:
    """Run over Ray actors (see the module docstring)."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=settings.options.ray_address, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        steps = Run(_checked(settings), stream, clock)
        async with contextlib.AsyncExitStack() as stack:
            await steps.resolve(stack)
            job = steps.job()
            job.pending.decide_grouping_only()
            await _merge_left_over(job)
            context = await steps.check(job)
        prepared = _Prepared(job, steps.backend.request_model, context)
        if settings.source.group_by_prefix == "auto":
            settings = _grouped(settings, job.pending.grouping)
        return await _RayRun(ray, settings, prepared, handle_signals).run()
    finally:
        if started_here:
            ray.shutdown()


def _checked(settings: RunSettings) -> RunSettings:
    """The settings the driver checks the input with: the workers group their own shards' rows
    by prefix; the driver only decides, under ``auto``, whether grouping pays."""
    grouping = "auto" if settings.source.group_by_prefix == "auto" else "off"
    return _grouped(settings, grouping)


def _grouped(settings: RunSettings, grouping: str) -> RunSettings:
    """``settings`` with ``--group-by-prefix grouping``."""
    return dataclasses.replace(
        settings, source=dataclasses.replace(settings.source, group_by_prefix=grouping))


async def _merge_left_over(job: Job) -> None:
    """Merge the shard outputs an earlier run left (its driver or node died) into the output."""
    records, shard_dir = job.paths.records, job.paths.shards
    if shard_dir.is_dir():
        merged = await asyncio.to_thread(merge_shards, records, shard_dir)
        job.say(f"merged {merged} records left in {shard_dir} by an earlier run into {records}")


class _RayRun:
    """The driver's loop: actors, shard hand-out, merged progress, the final merge."""

    def __init__(self, ray: Any, settings: RunSettings, prepared: _Prepared,
                 handle_signals: bool):
        self.ray = ray
        self.settings = settings
        self.config = settings.options
        self.job = prepared.job
        self.prepared = prepared
        self.handle_signals = handle_signals
        self.stopping = False
        self.actors: list[Any] = []
        # Each actor's node (by id() of its handle), and the shards finished on each node.
        self.nodes: dict[int, str] = {}
        self.shards_by_node: Counter[str] = Counter()

    def _worker_count(self) -> int:
        config = self.config
        if config.replicas is not None:
            return config.replicas
        if config.remote:
            listed = len(config.base_urls)
            if config.endpoints_file is not None:
                listed += len(read_endpoints_file(config.endpoints_file))
            return max(1, listed)
        gpus = int(self.ray.cluster_resources().get("GPU", 0))
        if gpus:
            return max(1, gpus // config.tensor_parallel_size)
        return max(1, sum(1 for node in self.ray.nodes() if node.get("Alive")))

    async def run(self) -> RunResult:
        job, config, paths = self.job, self.config, self.settings.paths
        source = self.settings.source
        total = job.total
        workers = self._worker_count()
        shard_rows = config.shard_rows or min(
            _MAX_SHARD_ROWS, max(_MIN_SHARD_ROWS, math.ceil(total / (workers * _SHARDS_PER_WORKER)))
        )
        shards = await asyncio.to_thread(plan_shards, source.path, source.format, shard_rows)
        mask = job.pending.done_mask
        write_manifest(paths.records, source.path, job.params)
        todo = deque(s for s in shards if _has_work(mask, s))
        workers = min(workers, len(todo))
        job.say_resuming()
        job.say(f"{len(todo)} shards of up to {shard_rows} rows for {workers} Ray workers; "
                f"shard outputs in {paths.shards}")
        plan = WorkerPlan(self.settings.absolute(), self.prepared.request_model,
                          self.prepared.context, self._replicas_per_node(workers))
        stats = job.new_stats()
        finished = RunStats(clock=job.clock)
        progress = Progress(stats, job.stream, mode=job.progress_mode())
        timeline = Timeline(paths.timeline or paths.records, stats, None, [], lambda: None,
                            lambda: None, job.say)
        self.actors = await self._start_actors(plan, workers) if todo else []
        interrupted = False
        restore = install_signal_handlers(self._interrupt) if self.handle_signals else None
        stats.start()
        timeline.open()
        ticker = asyncio.create_task(progress.run())
        sampler = asyncio.create_task(timeline.run())
        try:
            interrupted = await self._hand_out(todo, mask, stats, finished)
        finally:
            if restore is not None:
                restore()
            for task in (ticker, sampler):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._stop_actors()
            _set_counts(stats, finished, [])
            stats.finish()
            timeline.close()
            progress.close()
        merged = await asyncio.to_thread(merge_shards, paths.records, paths.shards)
        job.say(f"merged {merged} records from the shard outputs into {paths.records}")
        if len(self.shards_by_node) > 1:
            job.say("shards by Ray node: " + "; ".join(
                f"{node}: {count}" for node, count in sorted(self.shards_by_node.items())))
        final = job.new_stats()
        final.absorb(finished)
        # Shard outputs left by an earlier, killed run were merged too.
        final.already_done += max(0, merged - finished.done)
        final.started, final.finished = stats.started, stats.finished
        result = RunResult(final, interrupted=interrupted or self.stopping,
                           failures_are_lines=self.settings.openai_batch)
        job.finish(result)
        return result

    def _replicas_per_node(self, workers: int) -> int:
        nodes = sum(1 for node in self.ray.nodes() if node.get("Alive"))
        return workers if nodes <= 1 else 1

    async def _start_actors(self, plan: WorkerPlan, workers: int) -> list[Any]:
        ray, config = self.ray, self.config
        resources: dict[str, Any] = {"num_cpus": 1}
        if not config.remote and ray.cluster_resources().get("GPU", 0):
            resources = {"num_cpus": 1, "num_gpus": config.tensor_parallel_size}
        actor_class = ray.remote(ShardWorker).options(
            scheduling_strategy="SPREAD", max_concurrency=8, **resources
        )
        actors = [actor_class.remote(plan, replica) for replica in range(workers)]
        await self._check_shard_dir(actors, plan.settings.paths.shards)
        where = await asyncio.gather(*(actor.start.remote() for actor in actors),
                                     return_exceptions=True)
        alive = []
        for replica, (actor, answer) in enumerate(zip(actors, where, strict=True)):
            if isinstance(answer, BaseException):
                self.job.say(f"Ray worker {replica} failed to start: {_cause(answer)}")
                ray.kill(actor)
            else:
                self.job.say(f"Ray worker {replica} on {answer}")
                alive.append(actor)
        if not alive:
            first = next(a for a in where if isinstance(a, BaseException))
            cause = _cause(first)
            if isinstance(cause, VbatchError):
                raise cause
            raise ConfigError(f"no Ray worker could start: {cause}")
        return alive

    async def _check_shard_dir(self, actors: list[Any], shard_dir: Path) -> None:
        """Refuse a shard directory (absolute) that a worker's node does not see as the driver
        does (shard files written there would never reach the merge), before anything is
        sent."""
        token = secrets.token_hex(8)
        probe = shard_dir / f".vbatch-reach-{token}"
        try:
            shard_dir.mkdir(parents=True, exist_ok=True)
            probe.write_text(token)
        except OSError as exc:
            raise OutputError(f"cannot write in the shard directory {shard_dir} "
                              f"({exc.strerror}): give --shard-dir a writable directory that "
                              "every node mounts") from None
        try:
            answers = await asyncio.gather(
                *(actor.reaches.remote(str(probe), token) for actor in actors),
                return_exceptions=True)
            nodes = await asyncio.gather(*(actor.node.remote() for actor in actors),
                                         return_exceptions=True)
        finally:
            probe.unlink(missing_ok=True)
        for actor, answer, node in zip(actors, answers, nodes, strict=True):
            if isinstance(node, str):
                self.nodes[id(actor)] = node
            if isinstance(answer, str):
                with contextlib.suppress(OSError):
                    shard_dir.rmdir()
                raise ConfigError(
                    f"the shard directory {shard_dir} is not reachable from the Ray worker on "
                    f"{node}: {answer}. Every node must see the same directory: give "
                    "--shard-dir one on a file system all nodes mount. Nothing was sent.")

    async def _hand_out(self, todo: deque[Shard], mask: bytes, stats: RunStats,
                        finished: RunStats) -> bool:
        ray, actors = self.ray, self.actors
        counts = self.job.pending.prompt_token_counts
        running: dict[Any, tuple[Any, Shard]] = {}
        interrupted = False
        while (todo and not self.stopping) or running:
            for actor in self._takers(running, len(todo)):
                shard = todo.popleft()
                shard_counts = (counts[shard.first_row:shard.first_row + shard.rows]
                                if counts is not None else None)
                bits = done_bits(mask, shard.first_row, shard.rows)
                ref = actor.run_shard.remote(shard, bits, shard_counts)
                running[ref] = (actor, shard)
            if not running:
                break
            ready, _ = await asyncio.to_thread(ray.wait, list(running), num_returns=1,
                                               timeout=_POLL_S)
            for ref in ready:
                actor, shard = running.pop(ref)
                try:
                    result: RunResult = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    self.job.say(f"a Ray worker died on {shard.name} ({_cause(exc)}); "
                                 "its shard goes to another worker")
                    todo.appendleft(shard)
                    if actor not in actors:
                        continue  # its other shard came back first
                    # An actor that is only unreachable could still be writing the shard file.
                    with contextlib.suppress(Exception):
                        ray.kill(actor, no_restart=True)
                    actors.remove(actor)
                    if not actors:
                        raise ConfigError("every Ray worker died; rerun to resume") from None
                    continue
                except ray.exceptions.RayTaskError as exc:
                    raise _cause(exc) from None
                finished.absorb(result.stats)
                self.shards_by_node[self.nodes.get(id(actor), "a Ray node")] += 1
                interrupted = interrupted or result.interrupted
            sending = {id(actor): actor for actor, _ in running.values()}
            _set_counts(stats, finished, await self._live(list(sending.values())))
        return interrupted

    def _takers(self, running: dict[Any, tuple[Any, Shard]], left: int) -> list[Any]:
        """The actors to hand the next of ``left`` shards to, in turn: first those with
        none, then, while every actor can be given one more, each a next shard to start as
        its running one ends (with fewer left, a shard waits for the first actor free rather
        than behind a busy one)."""
        if self.stopping:
            return []
        held = Counter(id(actor) for actor, _ in running.values())
        takers = [actor for actor in self.actors if not held[id(actor)]][:left]
        held.update(id(actor) for actor in takers)
        if left - len(takers) >= len(self.actors):
            takers += [actor for actor in self.actors if held[id(actor)] < _SHARDS_AHEAD]
        return takers[:left]

    async def _live(self, actors: list[Any]) -> list[LiveCounts]:
        answers = await asyncio.gather(*(a.live.remote() for a in actors),
                                       return_exceptions=True)
        return [a for a in answers if isinstance(a, LiveCounts)]

    def _interrupt(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.job.say("stopping: the Ray workers finish their in-flight rows")
        for actor in self.actors:
            actor.interrupt.remote()

    async def _stop_actors(self) -> None:
        actors = self.actors
        if not actors:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(*(a.stop.remote() for a in actors), return_exceptions=True),
                timeout=30,
            )
        for actor in actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor)


def _has_work(mask: bytes, shard: Shard) -> bool:
    bits = np.frombuffer(done_bits(mask, shard.first_row, shard.rows), np.uint8)
    return int(np.count_nonzero(np.unpackbits(bits, count=shard.rows))) < shard.rows


def _set_counts(stats: RunStats, finished: RunStats, live: list[LiveCounts]) -> None:
    """What the progress bar shows: finished shards plus what running shards recorded."""
    stats.ok = finished.ok + sum(c.ok for c in live)
    stats.failed = finished.failed + sum(c.failed for c in live)
    stats.completion_tokens = finished.completion_tokens + sum(c.completion_tokens for c in live)


def _cause(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
