"""The output record, defined here and nowhere else: one JSON object per input row.

Every record has :data:`BASE_FIELDS`; an answer adds what the endpoint kind found in it
(:data:`ANSWER_FIELDS`, only where present); the run adds :data:`RUN_FIELDS`; ``--keep``
copies input fields, which must not clash with any of these (:data:`RECORD_FIELDS`).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import uuid
from collections.abc import Iterable
from typing import Any

from vbatch.endpoints import EndpointKind
from vbatch.errors import InputError, InvalidOutputError, RequestError
from vbatch.structured.answers import invalid_hint

__all__ = [
    "ANSWER_FIELDS",
    "BASE_FIELDS",
    "RECORD_COLUMNS",
    "RECORD_FIELDS",
    "RUN_FIELDS",
    "USAGE_FIELDS",
    "failed_record",
    "invalid_record",
    "is_empty",
    "json_value",
    "ok_record",
    "sent_record",
    "taken_columns",
    "unsent_record",
]

BASE_FIELDS = {
    "id": "the row's id (its --id-field value, else its 0-based index), a string",
    "index": "the row's 0-based position in the input",
    "status": "ok or failed",
    "text": "the answer's text (a list of them with --n > 1); null when failed, but for an "
            "invalid_output failure, which keeps the last answer's text",
    "finish_reason": "why generation stopped: stop, length, tool_calls, ...",
    "usage": "the server's token counts: prompt_tokens, completion_tokens, ...",
    "error": "null, or {type, message, status_code} saying why the row failed (and reason, "
             "for invalid_output: not_json, schema, pattern, choice, length, ...)",
}
ANSWER_FIELDS = {
    "parsed": "the answer as the value its spec gives (--json-schema, --json: the JSON value; "
              "--regex, --choice, --grammar: the text); a list with --n > 1",
    "logprobs": "the answer's log probabilities, when asked for",
    "reasoning": "a reasoning model's reasoning content (chat)",
    "tool_calls": "the tool calls of the answer (chat)",
    "refusal": "the model's refusal message (chat)",
    "response": "the server's whole answer (a line of an OpenAI Batch file)",
    "embedding": "the row's vector (--endpoint embeddings)",
    "score": "the pair's relevance score, a list of them for a list of documents (score)",
    "results": "{index, relevance_score} per document, most relevant first (rerank)",
    "label": "the predicted class (classify)",
    "probs": "the probability of each class (classify)",
    "result": "what the row's program returned (--program; a list of them with --rollouts)",
    "calls": "the calls the row's program made (--program)",
    "calls_replayed": "of them, those replayed from the calls journal of an earlier run",
    "calls_changed": "of them, those sent again because their request changed",
    "call_records": "each call's request and answer record (--keep-calls)",
}
RUN_FIELDS = {
    "attempts": "requests sent for the row (0: never sent)",
    "latency_s": "seconds from the first send to the record",
    "clamped_max_tokens": "the max_tokens sent when the row's was lowered to fit the context",
    "context_truncated": "true when the output stopped because the context was full",
    "request_hash": "a fingerprint of the request, so that a resume finds changed rows",
    "cached": "true when the answer was reused from --cache-dir (no request was sent)",
    "invalid_answers": "structured outputs: the answers not of the shape asked, by reason "
                       "(each was asked again), e.g. {\"not_json\": 1}",
}
RECORD_FIELDS = frozenset({**BASE_FIELDS, **ANSWER_FIELDS, **RUN_FIELDS})
USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
# Every column a flat record's own fields make (Parquet, DataFrames).
RECORD_COLUMNS = frozenset({*RECORD_FIELDS, *USAGE_FIELDS, "usage_details", "error_type",
                             "error_status_code"})


def taken_columns(keep: Iterable[str]) -> set[str]:
    """Every column name a flat record may have but its ``parsed`` value's: the record's fields
    (``keep``: the input fields it copies), and what ``usage`` and ``error`` become."""
    return {*RECORD_COLUMNS, *keep}


def sent_record(record: dict[str, Any], attempts: int, latency_s: float | None,
                fields: dict[str, Any] | None) -> dict[str, Any]:
    """``record`` with the run's fields: requests sent, latency, and the row's own fields
    (``--keep`` fields, ``clamped_max_tokens``, ``request_hash``)."""
    record["attempts"] = attempts
    record["latency_s"] = latency_s
    if fields:
        record.update(fields)
    return record


def unsent_record(row_id: str, index: int, error: RequestError | InputError,
                  fields: dict[str, Any]) -> dict[str, Any]:
    """The failed record of a row that was never sent (bad input, does not fit)."""
    return sent_record(failed_record(row_id, index, error), 0, None, fields)


def ok_record(row_id: str, index: int, response: dict[str, Any], kind: EndpointKind,
              n: int) -> dict[str, Any]:
    """The record of a row the server answered; raises InvalidResponseError on a bad body."""
    record: dict[str, Any] = {"id": row_id, "index": index, "status": "ok"}
    record.update(kind.answer(response, n))
    record.setdefault("error", None)
    return record


def invalid_record(row_id: str, index: int, error: InvalidOutputError,
                   attempts: int) -> dict[str, Any]:
    """The failed record of a row whose answers were all invalid: its last answer's text,
    finish reason and usage kept, ``parsed`` null, the reason and what to do."""
    answer = error.record
    record = failed_record(row_id, index, error)
    for name in ("text", "finish_reason", "usage"):
        record[name] = answer.get(name)
    if "response" in answer:
        record["response"] = answer["response"]
    record["parsed"] = None
    record["error"]["message"] = invalid_hint(error, attempts)
    return record


_ANSWER_FIELDS = ("text", "tool_calls", "reasoning", "response", "embedding", "score",
                  "results", "probs", "result")


def _blank(value: Any) -> bool:
    if isinstance(value, list):
        return all(map(_blank, value))
    return value is None or value == ""


def is_empty(record: dict[str, Any]) -> bool:
    """Whether an ``ok`` record carries no answer: no text, no tool calls, no reasoning, no
    whole response."""
    return all(map(_blank, map(record.get, _ANSWER_FIELDS)))


def failed_record(row_id: str, index: int, error: RequestError | InputError) -> dict[str, Any]:
    """The record of a row that has no result, with the reason."""
    detail: dict[str, Any]
    if isinstance(error, InputError):
        detail = {"type": "bad_input", "message": str(error), "status_code": None}
    else:
        message = getattr(error, "message", None) or str(error)
        detail = {"type": error.error_type, "message": message, "status_code": error.status_code}
        if isinstance(error, InvalidOutputError):
            detail["reason"] = error.reason
    return {
        "id": row_id,
        "index": index,
        "status": "failed",
        "text": None,
        "finish_reason": None,
        "usage": None,
        "error": detail,
    }


# Values JSON (and orjson) writes as they are.
_NATIVE = (str, int, float, bool, type(None), datetime.datetime, datetime.date, datetime.time,
           uuid.UUID)


def json_value(value: Any) -> Any:
    """``value`` (a ``--keep`` field of any input format) as JSON can hold it: a decimal as
    its exact text, bytes as base64, a duration in seconds, dates and times as they are (ISO
    8601 when written), lists and mappings item by item, anything else as its text."""
    if isinstance(value, _NATIVE):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    return str(value)
