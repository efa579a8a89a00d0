"""What a program is handed: ``llm``, whose calls (``chat``, ``complete``, ``embed``,
``score``, ``rerank``) go into the run's one bounded pool with every guarantee of a plain row,
and are replayed from the calls journal when a rerun finds them there."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from vbatch.errors import CallFailedError
from vbatch.output.ledger import fingerprint_text
from vbatch.prepare.builder import fingerprint_of
from vbatch.programs.calls import CallBuilder, CallRequest
from vbatch.programs.journal import CallJournal

__all__ = ["LLM", "CallResult", "RowCalls", "Stopped"]

Send = Callable[[CallRequest, str, int], Awaitable[dict[str, Any] | None]]


class Stopped(Exception):
    """The run stopped while a call waited: the row gets no record (it runs again later)."""


@dataclass
class CallResult:
    """A call's answer: ``record`` is the whole of it (a plain row's record)."""

    record: dict[str, Any]

    @property
    def text(self) -> str | None:
        """The answer's text (the first, when ``n`` > 1)."""
        text = self.record.get("text")
        return text[0] if isinstance(text, list) else text

    @property
    def texts(self) -> list[str | None]:
        """Every text of the answer (``n`` of them)."""
        text = self.record.get("text")
        return list(text) if isinstance(text, list) else [text]

    @property
    def parsed(self) -> Any:
        """The answer as the value its spec gives (``response_format``, ``choice``, ...)."""
        return self.record.get("parsed")

    @property
    def finish_reason(self) -> Any:
        return self.record.get("finish_reason")

    @property
    def usage(self) -> dict[str, Any]:
        return self.record.get("usage") or {}

    @property
    def embedding(self) -> Any:
        return self.record.get("embedding")

    @property
    def score(self) -> Any:
        return self.record.get("score")


@dataclass
class RowCalls:
    """What one row's program did: its calls (sent, replayed, re-sent because the request
    changed), their usage and, with ``--keep-calls``, each request and answer."""

    sent: int = 0
    replayed: int = 0
    changed: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    keys: list[str] = field(default_factory=list)
    kept: list[dict[str, Any]] | None = None

    @property
    def count(self) -> int:
        return len(self.keys)

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


class LLM:
    """The calls of one rollout of one row's program. Each call's place (``rollout:k``, k in
    the order the program makes its calls) names it in the journal: a program is expected to
    make the same calls given the same answers."""

    def __init__(self, builder: CallBuilder, journal: CallJournal, send: Send, row_id: str,
                 index: int, rollout: int, calls: RowCalls):
        self._builder = builder
        self._journal = journal
        self._send = send
        self._row_id = row_id
        self._index = index
        self._rollout = rollout
        self._calls = calls
        self._next = 0
        self.rollout = rollout

    async def chat(self, prompt: str | list[dict[str, Any]], **options: Any) -> CallResult:
        """A chat completion of ``prompt`` (a user message after ``system``) or of a list of
        messages; ``options`` override the run's (``max_tokens``, ``choice``, ...)."""
        content = {"messages": prompt} if isinstance(prompt, list) else {"prompt": prompt}
        return await self._call("chat", content, options)

    async def complete(self, prompt: str, **options: Any) -> CallResult:
        """A completion of the text ``prompt``."""
        return await self._call("completions", {"prompt": prompt}, options)

    async def embed(self, text: str, **options: Any) -> CallResult:
        """The embedding of ``text`` (its ``embedding``)."""
        return await self._call("embeddings", {"input": text}, options)

    async def score(self, text_1: str, text_2: str | list[str], **options: Any) -> CallResult:
        """The relevance score of a pair (its ``score``)."""
        return await self._call("score", {"text_1": text_1, "text_2": text_2}, options)

    async def rerank(self, query: str, documents: list[str], **options: Any) -> CallResult:
        """``documents`` ranked for ``query`` (the record's ``results``)."""
        return await self._call("rerank", {"query": query, "documents": documents}, options)

    async def _call(self, kind: str, content: dict[str, Any], options: dict[str, Any]
                    ) -> CallResult:
        key = f"{self._rollout}:{self._next}"
        self._next += 1
        calls = self._calls
        calls.keys.append(key)
        request = self._builder.build(kind, content, options, self._rollout)
        fingerprint = fingerprint_text(fingerprint_of(request.body))
        journaled = self._journal.lookup(self._index, key)
        if journaled is not None and journaled[0] == fingerprint:
            record = journaled[1]
            calls.replayed += 1
        else:
            calls.changed += journaled is not None
            answer = await self._send(request, self._row_id, self._index)
            if answer is None:
                raise Stopped
            record = answer
            calls.sent += 1
            calls.attempts += int(record.get("attempts") or 0)
            if record.get("status") == "ok":
                self._journal.add(self._row_id, self._index, key, fingerprint, record)
        usage = record.get("usage") or {}
        calls.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        calls.completion_tokens += int(usage.get("completion_tokens") or 0)
        if calls.kept is not None:
            calls.kept.append({"call": key, "kind": kind, "request": orjson.loads(request.body),
                               "record": record})
        if record.get("status") != "ok":
            error = record.get("error") or {}
            raise CallFailedError(f"llm.{_method(kind)} (call {key}) failed: "
                                  f"{error.get('type')}: {error.get('message')}", record)
        return CallResult(record)


def _method(kind: str) -> str:
    return {"completions": "complete", "embeddings": "embed"}.get(kind, kind)
