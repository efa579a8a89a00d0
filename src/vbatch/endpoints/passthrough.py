"""Any route, its answer kept whole: what an OpenAI Batch line gets (``vbatch run-batch``)."""

from __future__ import annotations

from typing import Any

from vbatch.endpoints.base import EndpointKind

__all__ = ["Passthrough"]


class Passthrough(EndpointKind):
    """The body a row gives is sent as it is; the server's JSON answer is the record's
    ``response``."""

    name = "passthrough"
    route = "/chat/completions"
    takes_messages = True

    def prompt_content(self, prompt: str, system: str | None) -> dict[str, Any]:
        raise NotImplementedError("a passthrough row carries its whole body")

    def answer(self, response: dict[str, Any], n: int) -> dict[str, Any]:
        usage = response.get("usage")
        return {"response": response, "usage": usage if isinstance(usage, dict) else None,
                "error": None}
