"""Every answer checked against its spec: it is parsed (the record's ``parsed``), or it is
invalid, with the reason, and sent again with a new seed (``--max-invalid-retries``); a row
whose answers all are invalid fails with ``error.type`` ``invalid_output``, its last answer's
text kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from vbatch.defaults import DEFAULT_INVALID_FINISH_REASONS, DEFAULT_MAX_INVALID_RETRIES
from vbatch.errors import InvalidOutputError
from vbatch.structured.specs import OutputSpec, Problem

__all__ = ["AnswerRules", "check_answer", "greedy", "invalid_hint", "reseeded"]

# Seeds vLLM takes: a signed 64-bit integer; kept to 31 bits, as every server takes those.
_SEEDS = 2**31


@dataclass(frozen=True)
class AnswerRules:
    """What makes an answer invalid beyond its spec, and how often a row is asked again."""

    invalid_finish_reasons: tuple[str, ...] = DEFAULT_INVALID_FINISH_REASONS
    max_invalid_retries: int = DEFAULT_MAX_INVALID_RETRIES


def _finish_problem(reason: str, record: dict[str, Any], max_tokens: int | None) -> Problem:
    if reason == "length":
        usage = record.get("usage") or {}
        tokens = usage.get("completion_tokens") or max_tokens
        after = f" after {tokens} tokens" if tokens else ""
        return Problem("length", f"finish_reason length{after}: the answer was cut before it "
                                 "was complete; raise --max-tokens")
    return Problem(reason, f"finish_reason {reason}: the answer did not end normally "
                           "(see --invalid-finish-reasons)")


def check_answer(record: dict[str, Any], spec: OutputSpec, rules: AnswerRules,
                 max_tokens: int | None) -> None:
    """Add ``parsed`` to an ok ``record`` (a list of values with ``--n`` > 1), or raise
    InvalidOutputError for its first invalid answer."""
    many, answers = _answers(record)
    parsed = []
    for text, reason in answers:
        if reason in rules.invalid_finish_reasons:
            problem: Problem | None = _finish_problem(reason, record, max_tokens)
        elif not isinstance(text, str):
            problem = Problem("no_text", "the answer has no text (a tool call or a refusal)")
        else:
            value, problem = spec.check(text)
        if problem is not None:
            raise InvalidOutputError(problem.reason, problem.message, record)
        parsed.append(value)
    record["parsed"] = parsed if many else parsed[0]


def _answers(record: dict[str, Any]) -> tuple[bool, list[tuple[Any, Any]]]:
    """Whether the record holds several answers, and each one's text and finish reason (of
    its ``response``, for an OpenAI Batch line's record)."""
    if "text" not in record and isinstance(record.get("response"), dict):
        choices = record["response"].get("choices")
        choices = choices if isinstance(choices, list) else []
        found = [(_choice_text(c), c.get("finish_reason")) for c in choices
                 if isinstance(c, dict)]
        return len(found) > 1, found or [(None, None)]
    texts: Any = record.get("text")
    reasons: Any = record.get("finish_reason")
    if isinstance(texts, list):
        return True, list(zip(texts, reasons or [], strict=False))
    return False, [(texts, reasons)]


def _choice_text(choice: dict[str, Any]) -> Any:
    message = choice.get("message")
    return message.get("content") if isinstance(message, dict) else choice.get("text")


def invalid_hint(error: InvalidOutputError, answers: int) -> str:
    """The message of a row that failed with ``error`` after ``answers`` answers."""
    if error.reason == "length":
        return error.message
    tried = f" ({answers} answers, each checked)" if answers > 1 else ""
    return (f"{error.message}{tried}: make the prompt ask for this shape, or raise "
            "--max-invalid-retries (with a --temperature above 0: a greedy answer is not asked "
            "again)")


def greedy(body: bytes) -> bool:
    """Whether a request decodes greedily (temperature 0): another seed gives the same answer,
    so an invalid one is not asked again."""
    return bool(orjson.loads(body).get("temperature") == 0)


def reseeded(body: bytes, retry: int) -> bytes:
    """``body`` with another seed, for retry number ``retry`` of an invalid answer."""
    payload = orjson.loads(body)
    seed = payload.get("seed")
    base = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
    payload["seed"] = (base + retry * 7919) % _SEEDS
    return orjson.dumps(payload)
