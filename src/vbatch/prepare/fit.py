"""Every request fits the context: the per-row policy and vLLM's context-length errors.

A row whose prompt has ``n`` tokens asks for ``m`` new tokens in a context of ``L``:

- ``n + 1 > L``: the prompt alone does not fit; the row is ``failed`` (``context_overflow``)
  under every policy (``fail`` stops the run before anything is sent);
- ``n + m > L``: ``clamp`` lowers ``max_tokens`` to ``L - n`` (the record says
  ``clamped_max_tokens``), ``skip`` fails the row with ``context_overflow``, ``fail`` stops
  the run before anything is sent and lists the rows.

vLLM's wording of the context error has changed several times; :func:`parse_context_error`
recognises every known form, and the structured ``param``/``code`` fields, and extracts the
numbers it can.
"""

from __future__ import annotations

import math
import re
from array import array
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from vbatch.errors import HTTPStatusError


@dataclass(frozen=True)
class Fit:
    """The outcome for one row: the ``max_tokens`` to send, or why it cannot be sent."""

    max_tokens: int | None
    clamped: bool = False
    problem: str | None = None


Tokens = TypeVar("Tokens", int, np.ndarray)


def context_needed(prompt_tokens: Tokens, max_tokens: int | np.ndarray | None) -> Tokens:
    """The context a row needs (rows, for an array): its prompt and the tokens it asks for
    (at least one); ``max_tokens`` is the run's, or each row's (an array, 0 for none)."""
    if isinstance(max_tokens, np.ndarray):
        return prompt_tokens + np.maximum(max_tokens, 1)  # type: ignore[no-any-return]
    return prompt_tokens + (max_tokens or 1)


def fits(prompt_tokens: int, max_tokens: int | None, context: int) -> bool:
    """Whether a row of ``prompt_tokens`` asking ``max_tokens`` fits a context of ``context``;
    ``max_tokens`` None: whether the prompt fits with one token of output."""
    return context_needed(prompt_tokens, max_tokens) <= context


def not_fitting(counts: array[int] | np.ndarray, max_tokens: int | np.ndarray | None,
                context: int) -> np.ndarray:
    """Indices of the rows (prompt tokens ``counts``, asking the run's or their own
    ``max_tokens``) that do not :func:`fit <fits>`."""
    values = np.asarray(counts, dtype=np.int64)
    return np.flatnonzero(context_needed(values, max_tokens) > context)


def fit_row(prompt_tokens: int, max_tokens: int | None, context: int, policy: str) -> Fit:
    """Apply ``policy`` to a row of ``prompt_tokens`` asking ``max_tokens`` in ``context``."""
    if not fits(prompt_tokens, None, context):
        return Fit(None, problem=(
            f"the prompt has {prompt_tokens} tokens and the context is {context}: "
            "it does not fit even without output"
        ))
    if max_tokens is None or fits(prompt_tokens, max_tokens, context):
        return Fit(max_tokens)
    if policy == "clamp":
        return Fit(context - prompt_tokens, clamped=True)
    return Fit(None, problem=(
        f"{prompt_tokens} prompt tokens + max_tokens {max_tokens} = "
        f"{prompt_tokens + max_tokens} > the context of {context}"
    ))


def budget_field(body: dict[str, Any]) -> str:
    """The field a request body gives its output limit in: ``max_tokens``, unless it gives
    only ``max_completion_tokens`` (an OpenAI Batch line may)."""
    return "max_completion_tokens" if body.get("max_tokens") is None and body.get(
        "max_completion_tokens") is not None else "max_tokens"


def refit(body: dict[str, Any], overflow: ContextError, context: int | None,
          prompt_tokens: int | None, asked: int | None) -> int | None:
    """Clamp ``body`` (in place) after the server refused it with the context error
    ``overflow``: the output limit it may ask for in the context the server reported (else
    ``context``) after the prompt it counted (else ``prompt_tokens``, ours), set in the field
    the body gave it in (:func:`budget_field`). None when it cannot fit: no numbers, or not
    even the prompt fits."""
    context = overflow.context or context
    prompt = overflow.prompt_tokens or prompt_tokens
    if context is None or prompt is None or not fits(prompt, None, context):
        return None
    clamped = context - prompt
    if asked is not None and clamped >= asked:
        # The server counts more prompt tokens than we did and did not say how many.
        clamped = asked - max(1, asked // 4)
    if clamped < 1:
        return None
    body[budget_field(body)] = clamped
    return clamped


def fitting_context(longest_need: int, model_context: int | None, step: int = 256) -> int:
    """The ``--max-model-len`` that fits a need of ``longest_need`` tokens, rounded up."""
    context = max(step, math.ceil(longest_need / step) * step)
    return min(context, model_context) if model_context else context


@dataclass(frozen=True)
class ContextError:
    """What a context-length error says; any number may be unknown."""

    context: int | None = None
    prompt_tokens: int | None = None
    max_tokens: int | None = None


def _ints(*values: str | None) -> list[int | None]:
    return [int(v) if v is not None else None for v in values]


_FORMS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r"maximum context length is (\d+) tokens\. However, you requested (\d+) tokens "
                r"\((\d+) in the messages, (\d+) in the completion\)"),
     ("context", "", "prompt_tokens", "max_tokens")),
    (re.compile(r"'max_tokens' or 'max_completion_tokens' is too large: (\d+)\. This model's "
                r"maximum context length is (\d+) tokens and your request has (\d+) input"),
     ("max_tokens", "context", "prompt_tokens")),
    (re.compile(r"You passed (\d+) input tokens and requested (\d+) output tokens\. However, "
                r"the model's context length is only (\d+) tokens"),
     ("prompt_tokens", "max_tokens", "context")),
    (re.compile(r"maximum context length is (\d+) tokens\. However, you requested (\d+) output "
                r"tokens and your prompt contains at least (\d+) input tokens"),
     ("context", "max_tokens", "prompt_tokens")),
    (re.compile(r"maximum context length is (\d+) tokens\. However, your prompt contains at "
                r"least (\d+) input tokens"),
     ("context", "prompt_tokens")),
    (re.compile(r"max_tokens=(\d+) cannot be greater than max_model_len=(\d+)"),
     ("max_tokens", "context")),
    (re.compile(r"decoder prompt \(length (\d+)\) is longer than the maximum model length "
                r"of (\d+)"),
     ("prompt_tokens", "context")),
    (re.compile(r"(?:context length|maximum context|max_model_len|context window)[^.]*?"
                r"(\d+)", re.IGNORECASE),
     ("context",)),
)
_STRUCTURED_CODES = {"context_length_exceeded", "string_above_max_length"}
_VAGUE = re.compile(r"context length|maximum context|context window|too many tokens|"
                    r"max_model_len|maximum model length", re.IGNORECASE)


def parse_context_error(error: HTTPStatusError) -> ContextError | None:
    """The numbers of a context-length error, or None when ``error`` is something else."""
    if error.status_code not in (400, 413, 422):
        return None
    message = error.message or ""
    for pattern, names in _FORMS:
        match = pattern.search(message)
        if match:
            found = dict(zip(names, _ints(*match.groups()), strict=True))
            found.pop("", None)
            return ContextError(**found)
    if error.code in _STRUCTURED_CODES or _VAGUE.search(message):
        return ContextError()
    if error.param in ("input_tokens", "max_tokens", "max_completion_tokens") and (
        "token" in message.lower()
    ):
        return ContextError()
    return None


def cut_by_context(record: dict[str, Any], context: int | None, asked: int | None) -> bool:
    """Whether the server stopped a record's output because the context (of ``context``
    tokens) was full, not at the ``asked`` max_tokens."""
    if context is None or record.get("finish_reason") != "length":
        return False
    usage = record.get("usage") or {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if prompt is None or completion is None:
        return False
    return bool(prompt + completion >= context and (asked is None or completion < asked))
