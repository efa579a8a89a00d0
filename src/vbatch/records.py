"""The output records: one JSON object per input row, ``ok`` or ``failed``."""

from __future__ import annotations

from typing import Any

from vbatch.errors import InputError, InvalidResponseError, RequestError


def ok_record(
    row_id: str, index: int, response: dict[str, Any], endpoint: str, n: int
) -> dict[str, Any]:
    """The record of a row the server answered; raises InvalidResponseError on a bad body."""
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        raise InvalidResponseError("the answer has no choices")
    try:
        ordered = sorted(choices, key=lambda c: c.get("index", 0))
        if endpoint == "chat":
            messages = [c["message"] for c in ordered]
            texts = [m.get("content") for m in messages]
        else:
            messages = []
            texts = [c["text"] for c in ordered]
        reasons = [c.get("finish_reason") for c in ordered]
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidResponseError(f"a choice lacks its text ({exc!r})") from None
    usage = response.get("usage")
    if not isinstance(usage, dict):
        usage = {"prompt_tokens": None, "completion_tokens": None}
    record: dict[str, Any] = {
        "id": row_id,
        "index": index,
        "status": "ok",
        "text": texts if n > 1 else texts[0],
        "finish_reason": reasons if n > 1 else reasons[0],
        "usage": usage,
        "error": None,
    }
    extras = {"logprobs": [c.get("logprobs") for c in ordered]}
    if messages:
        extras["reasoning"] = [m.get("reasoning_content") or m.get("reasoning")
                               for m in messages]
        extras["tool_calls"] = [m.get("tool_calls") or None for m in messages]
        extras["refusal"] = [m.get("refusal") for m in messages]
    for name, values in extras.items():
        if any(value is not None for value in values):
            record[name] = values if n > 1 else values[0]
    return record


def is_empty(record: dict[str, Any]) -> bool:
    """Whether an ``ok`` record carries no answer: no text, no tool calls, no reasoning."""
    def blank(value: Any) -> bool:
        if isinstance(value, list):
            return all(blank(item) for item in value)
        return value is None or value == ""

    return all(blank(record.get(name)) for name in ("text", "tool_calls", "reasoning"))


def failed_record(row_id: str, index: int, error: RequestError | InputError) -> dict[str, Any]:
    """The record of a row that has no result, with the reason."""
    detail: dict[str, Any]
    if isinstance(error, InputError):
        detail = {"type": "bad_input", "message": str(error), "status_code": None}
    else:
        message = getattr(error, "message", None) or str(error)
        detail = {"type": error.error_type, "message": message, "status_code": error.status_code}
    return {
        "id": row_id,
        "index": index,
        "status": "failed",
        "text": None,
        "finish_reason": None,
        "usage": None,
        "error": detail,
    }
