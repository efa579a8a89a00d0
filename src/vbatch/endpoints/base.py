"""What an endpoint kind is: the route rows go to, the body a row makes, the record fields an
answer gives. One module per kind (``chat``, ``completions``), registered in
:mod:`vbatch.endpoints`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from vbatch.errors import InvalidResponseError

__all__ = ["ChoicesKind", "EndpointKind", "InputKind", "usage_of"]


class EndpointKind(ABC):
    """One OpenAI-compatible API: ``name`` is what ``--endpoint`` takes."""

    name: str
    route: str
    takes_messages: bool
    # Served by a pooling model (vLLM's pooling runner), not a generating one.
    pooling = False
    # Its request is one text whose tokens can be counted before sending (not a pair).
    countable = True
    # Its API takes a list of inputs, so several rows can share a request.
    packs = False

    def configured(self, embedding_dtype: str) -> EndpointKind:
        """This kind for a run's options (the embedding dtype); most kinds have none."""
        return self

    def body_fields(self) -> dict[str, Any]:
        """Fields every request body of this kind carries (an embedding's encoding)."""
        return {}

    def row_content(self, location: str, data: dict[str, Any]) -> dict[str, Any] | None:
        """The request content of a row read from the kind's own fields (a score's pair);
        None for a kind whose rows give one prompt. Raises InputError."""
        return None

    @abstractmethod
    def prompt_content(self, prompt: str, system: str | None) -> dict[str, Any]:
        """The request content of a row whose prompt is ``prompt``."""

    @abstractmethod
    def answer(self, response: dict[str, Any], n: int) -> dict[str, Any]:
        """The record fields of the server's answer to one row (``n`` completions asked),
        in their order in the record; raises InvalidResponseError on a body it cannot read."""


class ChoicesKind(EndpointKind):
    """A generation API: the answer is a list of choices, each a text and a finish reason."""

    @abstractmethod
    def choice_fields(self, choice: dict[str, Any]) -> dict[str, Any]:
        """``text`` and what else one choice of an answer carries (``reasoning``, ...)."""

    def answer(self, response: dict[str, Any], n: int) -> dict[str, Any]:
        """``text`` and ``finish_reason`` (lists when ``n`` > 1), ``usage``, ``error`` (null),
        then each optional field some choice has."""
        return _choices_answer(self, response, n)


class InputKind(EndpointKind):
    """A pooling API whose request is one ``input`` text (a list of them, for a pack of rows)
    and whose answer's ``data`` has a result per input."""

    takes_messages = False
    pooling = True
    packs = True

    def prompt_content(self, prompt: str, system: str | None) -> dict[str, Any]:
        return {"input": prompt}

    @staticmethod
    def first_result(response: dict[str, Any]) -> dict[str, Any]:
        """The answer's first result; raises InvalidResponseError when it has none."""
        data = response.get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise InvalidResponseError("the answer has no data")
        result: dict[str, Any] = data[0]
        return result


def _choices_answer(kind: ChoicesKind, response: dict[str, Any], n: int) -> dict[str, Any]:
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        raise InvalidResponseError("the answer has no choices")
    try:
        ordered = choices if len(choices) == 1 else sorted(choices,
                                                           key=lambda c: c.get("index", 0))
        found = [kind.choice_fields(c) for c in ordered]
        reasons = [c.get("finish_reason") for c in ordered]
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidResponseError(f"a choice lacks its text ({exc!r})") from None
    usage = response.get("usage")
    if not isinstance(usage, dict):
        usage = {"prompt_tokens": None, "completion_tokens": None}
    texts = [fields.pop("text") for fields in found]
    many = n > 1
    record: dict[str, Any] = {
        "text": texts if many else texts[0],
        "finish_reason": reasons if many else reasons[0],
        "usage": usage,
        "error": None,
    }
    if not many:
        record.update((name, value) for name, value in found[0].items() if value is not None)
        return record
    for name in found[0]:
        values = [fields.get(name) for fields in found]
        if any(value is not None for value in values):
            record[name] = values
    return record


def usage_of(response: dict[str, Any]) -> dict[str, Any] | None:
    """The answer's ``usage``, when it is an object."""
    usage = response.get("usage")
    return usage if isinstance(usage, dict) else None
