"""What the dispatcher sends: a work item (one row's request), or a pack of several pooling
rows in one request.

A pooling request does milliseconds of work, so the server's per-request cost (HTTP, parsing,
scheduling) dominates: one request per row reached 0.77 of vLLM's offline ``LLM.embed``
throughput on a 2-core CPU, 16 rows per request 0.95 (``benchmarks/RESULTS.md``,
Embeddings). The kinds that take a list of inputs (embeddings, classify) are packed,
``--inputs-per-request`` rows at a time; each row still gets its own record (and its own
fingerprint, as if sent alone).

vLLM counts tokens per request, not per input: a packed row's ``usage`` is its share of the
request's, in proportion to its prompt's length, marked ``"shared_by": N`` (the rows of the
request); the shares add up to the server's count.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from vbatch.endpoints.base import EndpointKind, usage_of
from vbatch.errors import InvalidResponseError
from vbatch.prepare.fit import ContextError, refit
from vbatch.structured.specs import OutputSpec

__all__ = ["Pack", "WorkItem", "packed"]


@dataclass(slots=True)
class WorkItem:
    """One request to send: the row it answers, its JSON body and extra output fields, and
    the shape its answer must have (``spec``). A program's call also names the API its answer
    comes from (``kind``) and the completions it asks (``n``), when not the run's.
    ``reuse_key``: its key in the response cache, once looked up there (``b""``: its answer
    is not the same each time, so it has none); ``deterministic``: whether it is, when known
    before its body is read. ``urgent``: sent ahead of the items that are
    not (a program row's calls after its first)."""

    row_id: str
    index: int
    body: bytes
    fields: dict[str, Any] | None = None
    prompt_tokens: int | None = None
    max_tokens: int | None = None
    route: str | None = None
    spec: OutputSpec | None = None
    kind: EndpointKind | None = None
    n: int | None = None
    reuse_key: bytes | None = None
    deterministic: bool | None = None
    urgent: bool = False

    def refit(self, overflow: ContextError, context: int | None) -> bool:
        """Clamp to what the context the server reported leaves (the fit rule's
        :func:`~vbatch.prepare.fit.refit`); False if it can't."""
        body = orjson.loads(self.body)
        clamped = refit(body, overflow, context, self.prompt_tokens, self.max_tokens)
        if clamped is None:
            return False
        self.body = orjson.dumps(body)
        self.max_tokens = clamped
        self.fields = {**(self.fields or {}), "clamped_max_tokens": clamped}
        return True


@dataclass(slots=True)
class Pack:
    """Rows sent as one request: their inputs, in order, as the ``input`` list of one body."""

    items: list[WorkItem]
    body: bytes
    weights: list[int]
    route: str | None = None

    @classmethod
    def of(cls, items: list[WorkItem]) -> Pack:
        """The pack of ``items`` (bodies that differ only in their ``input``)."""
        bodies = [orjson.loads(item.body) for item in items]
        inputs = [body["input"] for body in bodies]
        weights = [item.prompt_tokens or len(orjson.dumps(text))
                   for item, text in zip(items, inputs, strict=True)]
        body = orjson.dumps({**bodies[0], "input": inputs})
        return cls(items, body, weights, items[0].route)

    def answers(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        """The answer of each row, as if it had been sent alone; raises InvalidResponseError
        when the answer does not hold one result per row."""
        data = response.get("data")
        if not isinstance(data, list) or len(data) != len(self.items):
            raise InvalidResponseError(
                f"the answer to {len(self.items)} inputs does not hold {len(self.items)} results")
        try:
            ordered = sorted(data, key=lambda result: result["index"])
        except (KeyError, TypeError):
            raise InvalidResponseError("a result of the answer has no index") from None
        usages = self._shares(usage_of(response))
        return [{"data": [result], "usage": usage} for result, usage in zip(ordered, usages,
                                                                             strict=True)]

    def _shares(self, usage: dict[str, Any] | None) -> list[dict[str, Any] | None]:
        total = usage.get("prompt_tokens") if usage else None
        if not isinstance(total, int):
            return [None] * len(self.items)
        weight = sum(self.weights) or 1
        shares = [total * w // weight for w in self.weights]
        shares[-1] += total - sum(shares)
        count = len(self.items)
        return [{"prompt_tokens": share, "total_tokens": share, "shared_by": count}
                for share in shares]


def packed(source: Iterable[WorkItem | dict[str, Any]], size: int
           ) -> Iterator[WorkItem | Pack | dict[str, Any]]:
    """``source`` with its work items in packs of ``size`` (the last may be smaller; a pack of
    one is the item itself); ready records pass through at once."""
    waiting: list[WorkItem] = []
    for item in source:
        if isinstance(item, dict):
            yield item
            continue
        if waiting and item.route != waiting[0].route:
            yield _pack(waiting)
            waiting = []
        waiting.append(item)
        if len(waiting) == size:
            yield _pack(waiting)
            waiting = []
    if waiting:
        yield _pack(waiting)


def _pack(items: list[WorkItem]) -> WorkItem | Pack:
    return items[0] if len(items) == 1 else Pack.of(items)
