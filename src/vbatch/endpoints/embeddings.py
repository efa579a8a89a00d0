"""``/v1/embeddings``: a row's prompt becomes ``input``; the record carries its ``embedding``."""

from __future__ import annotations

from typing import Any

from vbatch.endpoints.base import EndpointKind
from vbatch.errors import InvalidResponseError

__all__ = ["Embeddings"]


class Embeddings(EndpointKind):
    """The embeddings API of a pooling model: one vector per row."""

    name = "embeddings"
    route = "/embeddings"
    takes_messages = False
    pooling = True

    def prompt_content(self, prompt: str, system: str | None) -> dict[str, Any]:
        return {"input": prompt}

    def answer(self, response: dict[str, Any], n: int) -> dict[str, Any]:
        data = response.get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise InvalidResponseError("the answer has no data")
        embedding = data[0].get("embedding")
        if not isinstance(embedding, list):
            raise InvalidResponseError("the answer's data has no embedding")
        usage = response.get("usage")
        return {"embedding": embedding, "usage": usage if isinstance(usage, dict) else None,
                "error": None}
