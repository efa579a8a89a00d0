"""A program run: each row's program (``--program``), run for every row at once under a bound
on active rows, its calls sent through the run's one pool (:meth:`Dispatcher.submit`), so the
server's queue stays full with no stage barrier; each row's record when its program returns
(``result``) or raises (``program_error``, in that row only)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from vbatch.engine.items import WorkItem
from vbatch.errors import OutputWriteError
from vbatch.output.records import sent_record
from vbatch.program_loader import Program
from vbatch.programs.calls import CallBuilder, CallRequest
from vbatch.programs.journal import CallJournal
from vbatch.programs.llm import LLM, RowCalls, Stopped

__all__ = ["ProgramDriver"]

Submit = Callable[[WorkItem], Any]
Emit = Callable[[dict[str, Any]], None]


class ProgramDriver:
    """Runs ``program`` over the rows of ``work`` (their bodies are the rows), at most
    ``active`` rows at a time, ``rollouts`` times each."""

    def __init__(self, program: Program, builder: CallBuilder, journal: CallJournal,
                 work: Iterable[WorkItem | dict[str, Any]], *, active: int, rollouts: int,
                 keep_calls: bool, clock: Callable[[], float]):
        self.program = program
        self.builder = builder
        self.journal = journal
        self.work = work
        self.active_bound = active
        self.rollouts = rollouts
        self.keep_calls = keep_calls
        self.clock = clock
        self.active = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    async def drive(self, submit: Submit, emit: Emit) -> None:
        """Start each row's program as a slot frees up; return once every one has ended. A
        write that fails (the calls journal, a record) stops every program at once and is
        raised here."""
        slots = asyncio.Semaphore(self.active_bound)
        everyone_done = asyncio.Event()
        everyone_done.set()

        def ended(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self.active -= 1
            slots.release()
            if not self._tasks:
                everyone_done.set()

        try:
            for item in self.work:
                if self._failure is not None:
                    break
                if isinstance(item, dict):
                    emit(item)
                    continue
                await slots.acquire()
                if self._failure is not None:
                    break
                self.active += 1
                everyone_done.clear()
                task = asyncio.create_task(self._row(item, submit, emit))
                self._tasks.add(task)
                task.add_done_callback(ended)
            await everyone_done.wait()
        finally:
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._failure is not None:
            raise self._failure

    def _fail(self, error: OutputWriteError) -> None:
        """Stop every program: nothing more can be recorded."""
        if self._failure is None:
            self._failure = error
        for task in list(self._tasks):
            task.cancel()

    def close(self, complete: bool) -> None:
        """End the run: the calls journal is kept for a rerun unless ``complete`` (every row
        has an ``ok`` record), when it is removed."""
        self.journal.close(complete)

    async def _row(self, item: WorkItem, submit: Submit, emit: Emit) -> None:
        calls = RowCalls(kept=[] if self.keep_calls else None)
        started = self.clock()

        async def send(request: CallRequest, row_id: str, index: int) -> dict[str, Any] | None:
            # The row's calls after its first go ahead of other rows' first calls.
            work = WorkItem(row_id, index, request.body, None, None, request.max_tokens,
                            request.route, request.spec, kind=request.kind, n=request.n,
                            urgent=calls.count > 1)
            answer: dict[str, Any] | None = await submit(work)
            return answer

        try:
            record = await self._run(item, calls, send)
        except Stopped:
            return
        except OutputWriteError as exc:
            self._fail(exc)
            return
        self.journal.forget(item.index, calls.keys)
        record["calls"] = calls.count
        if calls.replayed:
            record["calls_replayed"] = calls.replayed
        if calls.changed:
            record["calls_changed"] = calls.changed
        if calls.kept is not None:
            record["call_records"] = calls.kept
        try:
            emit(sent_record(record, calls.attempts, round(self.clock() - started, 4),
                             item.fields))
        except OutputWriteError as exc:
            self._fail(exc)

    async def _run(self, item: WorkItem, calls: RowCalls, send: Any) -> dict[str, Any]:
        base = {"id": item.row_id, "index": item.index}
        try:
            if self.rollouts == 1:
                value = await self.program(orjson.loads(item.body), self._llm(item, 0, calls,
                                                                               send))
            else:
                value = await self._rollouts(item, calls, send)
            result = _json_result(value)
        except (Stopped, OutputWriteError, asyncio.CancelledError):
            raise
        except Exception as exc:
            at = f" (at call {calls.keys[-1]})" if calls.keys else " (before any call)"
            return {**base, "status": "failed", "text": None, "finish_reason": None,
                    "usage": calls.usage(), "error": {
                        "type": "program_error", "message": f"{type(exc).__name__}: {exc}{at}",
                        "status_code": None, "exception": type(exc).__name__,
                        "call": calls.keys[-1] if calls.keys else None}}
        return {**base, "status": "ok", "text": None, "finish_reason": None,
                "usage": calls.usage(), "error": None, "result": result}

    async def _rollouts(self, item: WorkItem, calls: RowCalls, send: Any) -> list[Any]:
        tasks = [asyncio.ensure_future(self.program(orjson.loads(item.body),
                                                    self._llm(item, r, calls, send)))
                 for r in range(self.rollouts)]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()

    def _llm(self, item: WorkItem, rollout: int, calls: RowCalls, send: Any) -> LLM:
        return LLM(self.builder, self.journal, send, item.row_id, item.index, rollout, calls)


def _json_result(value: Any) -> Any:
    """The program's return value as JSON holds it (a pydantic object as its data); raises
    TypeError naming the type JSON cannot hold."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    try:
        return orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))
    except TypeError:
        raise TypeError(f"the program returned a {type(value).__name__}, which JSON cannot "
                        "hold: return dicts, lists, strings, numbers, booleans or None"
                        ) from None
