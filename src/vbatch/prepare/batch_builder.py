"""Requests of an OpenAI Batch file: each line's ``body`` as it is, to the route its ``url``
names (:data:`~vbatch.source.openai_batch.BATCH_ROUTES`). A line that cannot be sent (an unknown
url, ``"stream": true``) is a failed record, never a request."""

from __future__ import annotations

from typing import Any

import orjson

from vbatch.config import RunConfig
from vbatch.endpoints.passthrough import Passthrough
from vbatch.errors import InputError
from vbatch.prepare.builder import RequestBuilder, fingerprint_of
from vbatch.source.openai_batch import BATCH_ROUTES
from vbatch.source.readers import RawRow

__all__ = ["BatchRequestBuilder"]


class BatchRequestBuilder(RequestBuilder):
    """The request builder of a batch file."""

    countable = False

    def __init__(self, config: RunConfig, model: str | None):
        self.config = config
        self.model = model
        self.kind = Passthrough()
        self.route = self.kind.route

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
        return {"url": url, "body": body}

    def route_for(self, content: dict[str, Any]) -> str:
        """The route of the line's url, under the server's API."""
        return BATCH_ROUTES[content["url"]]

    def max_tokens_of(self, content: dict[str, Any]) -> int | None:
        """The ``max_tokens`` the line asks for."""
        asked = content["body"].get("max_tokens") or content["body"].get("max_completion_tokens")
        return asked if isinstance(asked, int) and not isinstance(asked, bool) else None

    def body(self, content: dict[str, Any], max_tokens: int | None = None) -> bytes:
        """The line's body as JSON."""
        return orjson.dumps(content["body"])

    def fingerprint(self, content: dict[str, Any]) -> int:
        """The fingerprint of the line's url and body."""
        return fingerprint_of(orjson.dumps(content))

    def request_fingerprint(self, content: dict[str, Any], body: bytes, clamped: bool) -> int:
        return self.fingerprint(content)
