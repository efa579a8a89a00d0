"""vLLM's ``/classify``: a classification model's label and class probabilities per row."""

from __future__ import annotations

from typing import Any

from vbatch.endpoints.base import EndpointKind, usage_of
from vbatch.errors import InvalidResponseError

__all__ = ["Classify"]


class Classify(EndpointKind):
    """A row's prompt becomes ``input``; the record carries ``label`` and ``probs``."""

    name = "classify"
    # vLLM serves it at its root, not under /v1 (see transport.pool.ROOT_ROUTES).
    route = "/classify"
    takes_messages = False
    pooling = True
    packs = True

    def prompt_content(self, prompt: str, system: str | None) -> dict[str, Any]:
        return {"input": prompt}

    def answer(self, response: dict[str, Any], n: int) -> dict[str, Any]:
        data = response.get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise InvalidResponseError("the answer has no data")
        probs = data[0].get("probs")
        if not isinstance(probs, list):
            raise InvalidResponseError("the answer's data has no probs")
        return {"label": data[0].get("label"), "probs": probs, "usage": usage_of(response),
                "error": None}
