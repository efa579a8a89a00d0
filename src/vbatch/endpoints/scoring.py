"""vLLM's scoring APIs: ``/score`` (a relevance score per text pair) and ``/rerank``
(documents ordered by relevance to a query). Both read a pair of fields from the row."""

from __future__ import annotations

from typing import Any, ClassVar

from vbatch.endpoints.base import EndpointKind, usage_of
from vbatch.errors import InputError, InvalidResponseError

__all__ = ["Rerank", "Score"]


def _text(location: str, data: dict[str, Any], field: str) -> str:
    value = data[field]
    if not isinstance(value, str):
        raise InputError(location, f"expected a string, got {type(value).__name__}", field)
    return value


def _texts(location: str, data: dict[str, Any], field: str) -> str | list[str]:
    value = data[field]
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InputError(location, "expected a string or a non-empty list of strings", field)
    return value


class Score(EndpointKind):
    """A row ``{text_1, text_2}`` or ``{query, documents}``: the record's ``score`` is one
    number, or one per document when the second is a list."""

    name = "score"
    route = "/score"
    takes_messages = False
    pooling = True
    countable = False
    # A row's pair of fields -> the names vLLM's /score takes them under.
    PAIRS: ClassVar[dict[tuple[str, str], tuple[str, str]]] = {
        ("text_1", "text_2"): ("text_1", "text_2"),
        ("query", "documents"): ("queries", "documents")}

    def row_content(self, location: str, data: dict[str, Any]) -> dict[str, Any]:
        for (first, second), (sent_first, sent_second) in self.PAIRS.items():
            if first in data and second in data:
                return {sent_first: _text(location, data, first),
                        sent_second: _texts(location, data, second)}
        raise InputError(location, "a score row needs text_1 and text_2, or query and documents",
                         hint="rename the row's fields")

    def prompt_content(self, prompt: str, system: str | None) -> dict[str, Any]:
        raise NotImplementedError("a score row is a pair of fields, read by row_content")

    def answer(self, response: dict[str, Any], n: int) -> dict[str, Any]:
        data = response.get("data")
        if not isinstance(data, list) or not data:
            raise InvalidResponseError("the answer has no data")
        try:
            scores = [item["score"] for item in sorted(data, key=lambda item: item["index"])]
        except (KeyError, TypeError) as exc:
            raise InvalidResponseError(f"a score lacks its value ({exc!r})") from None
        return {"score": scores[0] if len(scores) == 1 else scores,
                "usage": usage_of(response), "error": None}


class Rerank(Score):
    """A row ``{query, documents}``: the record's ``results`` are ``{index, relevance_score}``,
    most relevant first (``index`` is the document's position in the row)."""

    name = "rerank"
    route = "/rerank"

    def row_content(self, location: str, data: dict[str, Any]) -> dict[str, Any]:
        for field in ("query", "documents"):
            if field not in data:
                raise InputError(location, "missing: a rerank row needs query and documents",
                                 field)
        documents = _texts(location, data, "documents")
        return {"query": _text(location, data, "query"),
                "documents": [documents] if isinstance(documents, str) else documents}

    def answer(self, response: dict[str, Any], n: int) -> dict[str, Any]:
        results = response.get("results")
        if not isinstance(results, list):
            raise InvalidResponseError("the answer has no results")
        try:
            ranked = [{"index": r["index"], "relevance_score": r["relevance_score"]}
                      for r in results]
        except (KeyError, TypeError) as exc:
            raise InvalidResponseError(f"a result lacks its score ({exc!r})") from None
        return {"results": ranked, "usage": usage_of(response), "error": None}
