"""Requests of an OpenAI Batch file: each line's ``body`` as it is, to the route its ``url``
names (:data:`~vbatch.source.openai_batch.BATCH_ROUTES`). A line that cannot be sent (an unknown
url, ``"stream": true``) is a failed record, never a request.

The prompts of chat and completions lines are counted and fitted to the context as a plain
run's rows are (``--on-overflow``), each with its own ``max_tokens``; a clamped line is sent
with ``max_tokens`` (or ``max_completion_tokens``, the one it gave) lowered."""

from __future__ import annotations

from typing import Any

import orjson

from vbatch.cache.store import deterministic
from vbatch.endpoints.passthrough import Passthrough
from vbatch.errors import InputError
from vbatch.prepare.builder import RequestBuilder, fingerprint_of
from vbatch.prepare.fit import budget_field
from vbatch.settings import RequestSettings
from vbatch.source.openai_batch import BATCH_ROUTES
from vbatch.source.readers import RawRow
from vbatch.structured.parse import BODY_SPEC_FIELDS, row_spec
from vbatch.structured.specs import OutputSpec

__all__ = ["BatchRequestBuilder"]


class BatchRequestBuilder(RequestBuilder):
    """The request builder of a batch file."""

    asks_per_row = True

    def __init__(self, requests: RequestSettings, model: str | None, pooling: bool):
        self.requests = requests
        self.model = model
        self.kind = Passthrough()
        self.route = self.kind.route
        # A file of pooling lines only has nothing to count (no tokenizer is loaded).
        self.countable = not pooling
        self.spec = None

    def row_id(self, row: RawRow) -> str:
        """The line's ``custom_id``."""
        data = row.data or {}
        custom_id = data.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise InputError(row.location, "custom_id must be a non-empty string", "custom_id")
        return custom_id

    def content(self, row: RawRow) -> dict[str, Any]:
        """``{"url", "body"}`` of a line that can be sent; raises InputError for one that
        cannot."""
        data = row.data or {}
        url, body = data.get("url"), data.get("body")
        if url not in BATCH_ROUTES:
            raise InputError(row.location, f"the url {url!r} is not one vbatch sends to "
                             f"({', '.join(BATCH_ROUTES)})", "url")
        if not isinstance(body, dict):
            raise InputError(row.location, "body must be a JSON object", "body")
        if body.get("stream") not in (None, False, "False", "false"):
            raise InputError(row.location, "streaming is not supported in a batch", "stream")
        content = {"url": url, "body": body}
        try:
            self.spec_of(content)
        except (ValueError, TypeError) as exc:
            raise InputError(row.location, f"its structured output is not valid: {exc}",
                             "body") from None
        return content

    def spec_of(self, content: dict[str, Any]) -> OutputSpec | None:
        """The shape the line's body asks for (``response_format``, ``structured_outputs``,
        ``guided_*``): its answer is checked as a run's are."""
        body = content["body"]
        asked = {name: body[name] for name in BODY_SPEC_FIELDS if name in body}
        return row_spec(asked, of_body=True) if asked else None

    @property
    def structured(self) -> bool:
        """A line's body is sent as it is (in the form it gives): no form to find, no spec of
        the run's to ask the server about; each answer is checked against its line's."""
        return False

    def route_for(self, content: dict[str, Any]) -> str:
        """The route of the line's url, under the server's API."""
        return BATCH_ROUTES[content["url"]]

    def counted(self, content: dict[str, Any]) -> dict[str, Any] | None:
        """The messages of a chat line or the prompt (one string) of a completions line, with
        the line's ``max_tokens``; None for what is not counted (pooling lines, token-id or
        multi-part prompts)."""
        url, body = content["url"], content["body"]
        counted: dict[str, Any]
        if url == "/v1/chat/completions":
            messages = body.get("messages")
            if not (isinstance(messages, list) and messages and all(map(_plain, messages))):
                return None
            counted = {"messages": messages}
        elif url == "/v1/completions" and isinstance(body.get("prompt"), str):
            counted = {"prompt": body["prompt"]}
        else:
            return None
        asked = self.max_tokens_of(content)
        return counted if asked is None else {**counted, "max_tokens": asked}

    def deterministic(self, content: dict[str, Any]) -> bool:
        """Whether the line's body is answered the same each time."""
        return deterministic(content["body"])

    def max_tokens_of(self, content: dict[str, Any]) -> int | None:
        """The ``max_tokens`` (or ``max_completion_tokens``) the line asks for."""
        body = content["body"]
        asked = body.get(budget_field(body))
        return asked if isinstance(asked, int) and not isinstance(asked, bool) else None

    def body(self, content: dict[str, Any], max_tokens: int | None = None) -> bytes:
        """The line's body as JSON, with ``max_tokens`` lowered when the line was clamped."""
        body = content["body"]
        if max_tokens is not None and max_tokens != self.max_tokens_of(content):
            body = {**body, budget_field(body): max_tokens}
        return orjson.dumps(body)

    def fingerprint(self, content: dict[str, Any]) -> int:
        """The fingerprint of the line's url and body."""
        return fingerprint_of(orjson.dumps(content))

    def request_fingerprint(self, content: dict[str, Any], body: bytes, clamped: bool) -> int:
        return self.fingerprint(content)


def _plain(message: Any) -> bool:
    """A message whose tokens the chat template can count: a role and text content."""
    return (isinstance(message, dict) and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str))
