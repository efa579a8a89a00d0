"""``/v1/completions``: rows become a plain ``prompt``; answers are texts."""

from __future__ import annotations

from typing import Any

from vbatch.endpoints.base import ChoicesKind

__all__ = ["Completions"]


class Completions(ChoicesKind):
    """The completions API: the prompt is sent as it is; no messages, no system prompt."""

    name = "completions"
    route = "/completions"
    takes_messages = False

    def prompt_content(self, prompt: str, system: str | None) -> dict[str, Any]:
        return {"prompt": prompt}

    def choice_fields(self, choice: dict[str, Any]) -> dict[str, Any]:
        return {"text": choice["text"], "logprobs": choice.get("logprobs")}
