"""How a server refuses a request: OpenAI's error body, and the context-length errors of
several vLLM versions and of llama.cpp (``SimConfig.context_error_style``)."""

from __future__ import annotations

from typing import Any

__all__ = ["context_refusal", "error_body"]


def error_body(message: str, param: str | None = None, code: Any = 400,
                kind: str = "BadRequestError") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def context_refusal(limit: int, style: str, n: int, m: int) -> dict[str, Any] | None:
    """The 400 body a server with a context of ``limit`` tokens, refusing in the words of
    ``style``, answers a prompt of ``n`` tokens asking ``m``; None if it serves.

    ``vllm-0.32`` refuses only a too-large max_tokens or a prompt that does not fit alone and
    silently cuts the output otherwise; the other styles refuse prompt + max_tokens > L in
    the words of older vLLM versions and of llama.cpp.
    """
    if m > limit:
        return error_body(f"max_tokens={m} cannot be greater than max_model_len={limit}. "
                           "Please request fewer output tokens.", "max_tokens")
    if n > limit:
        return error_body(
            f"This model's maximum context length is {limit} tokens. However, your prompt "
            f"contains at least {n} input tokens, which exceeds this limit even without any "
            f"output tokens. Please reduce the length of the input prompt. "
            f"(parameter=input_tokens, value={n})", "input_tokens")
    if n + m <= limit or style == "vllm-0.32":
        return None
    messages = {
        "requested": f"This model's maximum context length is {limit} tokens. However, you "
                     f"requested {n + m} tokens ({n} in the messages, {m} in the completion). "
                     "Please reduce the length of the messages or completion.",
        "too-large": f"'max_tokens' or 'max_completion_tokens' is too large: {m}. This model's "
                     f"maximum context length is {limit} tokens and your request has {n} input "
                     f"tokens ({m} > {limit} - {n}).",
        "you-passed": f"You passed {n} input tokens and requested {m} output tokens. However, "
                      f"the model's context length is only {limit} tokens, resulting in a "
                      f"maximum input length of {limit - m} tokens.",
        "at-least": f"This model's maximum context length is {limit} tokens. However, you "
                    f"requested {m} output tokens and your prompt contains at least {n} input "
                    f"tokens, for a total of at least {n + m} tokens.",
    }
    if style == "llama-cpp":
        return error_body("the request exceeds the available context size",
                           code="context_length_exceeded", kind="invalid_request_error")
    return error_body(messages[style])
