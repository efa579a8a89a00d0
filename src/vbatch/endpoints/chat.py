"""``/v1/chat/completions``: rows become ``messages``; answers are messages."""

from __future__ import annotations

from typing import Any

from vbatch.endpoints.base import ChoicesKind

__all__ = ["Chat"]


class Chat(ChoicesKind):
    """The chat API: a prompt becomes a user message (after ``--system``)."""

    name = "chat"
    route = "/chat/completions"
    takes_messages = True

    def prompt_content(self, prompt: str, system: str | None) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        return {"messages": messages}

    def choice_fields(self, choice: dict[str, Any]) -> dict[str, Any]:
        message = choice["message"]
        return {
            "text": message.get("content"),
            "logprobs": choice.get("logprobs"),
            "reasoning": message.get("reasoning_content") or message.get("reasoning"),
            "tool_calls": message.get("tool_calls") or None,
            "refusal": message.get("refusal"),
        }
