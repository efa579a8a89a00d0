"""How long a request waits before it is sent again: exponential backoff with jitter, at
least what the server's ``Retry-After`` asks (bounded)."""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]

_MAX_BACKOFF_S = 60.0
_MAX_RETRY_AFTER_S = 600.0


def backoff_delay(attempt: int, base: float, retry_after: float | None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): exponential, jittered."""
    delay: float = min(_MAX_BACKOFF_S, base * 2.0 ** (attempt - 1)) * (0.5 + random.random() / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, _MAX_RETRY_AFTER_S))
    return delay
