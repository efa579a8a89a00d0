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
            texts = [c["message"].get("content") for c in ordered]
        else:
            texts = [c["text"] for c in ordered]
        reasons = [c.get("finish_reason") for c in ordered]
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidResponseError(f"a choice lacks its text ({exc!r})") from None
    usage = response.get("usage") or {}
    record: dict[str, Any] = {
        "id": row_id,
        "index": index,
        "status": "ok",
        "text": texts if n > 1 else texts[0],
        "finish_reason": reasons if n > 1 else reasons[0],
        "usage": {
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
        },
        "error": None,
    }
    logprobs = [c.get("logprobs") for c in ordered]
    if any(lp is not None for lp in logprobs):
        record["logprobs"] = logprobs if n > 1 else logprobs[0]
    return record


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
