"""vLLM's ``/classify``: a classification model's label and class probabilities per row."""

from __future__ import annotations

from typing import Any

from vbatch.endpoints.base import InputKind, usage_of
from vbatch.errors import InvalidResponseError

__all__ = ["Classify"]


class Classify(InputKind):
    """A row's prompt becomes ``input``; the record carries ``label`` and ``probs``."""

    name = "classify"
    # vLLM serves it at its root, not under /v1 (see transport.pool.ROOT_ROUTES).
    route = "/classify"

    def answer(self, response: dict[str, Any], n: int) -> dict[str, Any]:
        result = self.first_result(response)
        probs = result.get("probs")
        if not isinstance(probs, list):
            raise InvalidResponseError("the answer's data has no probs")
        return {"label": result.get("label"), "probs": probs, "usage": usage_of(response),
                "error": None}
