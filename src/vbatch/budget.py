"""Budgets: ``--time-limit`` (wall time of the command), ``--token-budget`` (tokens generated,
or prompt and generated with ``+prompt``), ``--max-requests``. On reaching one, sending stops
as on Ctrl-C (the in-flight rows get the shutdown grace, every finished record is written)
and the run ends with exit 5: rerunning the command carries on. The time limit stops taking
rows early enough (by the rows' p95 latency so far) that the ones in flight finish inside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vbatch.errors import ConfigError

__all__ = ["Budget", "parse_duration", "parse_token_budget"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s|ms)?", re.I)
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, None: 1.0}
_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)\s*(\+\s*prompt)?\s*$", re.I)
_SCALE = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_duration(value: float | int | str) -> float:
    """Seconds of ``value``: a number of seconds, or ``90s``, ``15m``, ``3h``, ``1h30m``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        parts = list(_DURATION.finditer(text))
        if not parts or "".join(p.group(0) for p in parts) != text:
            raise ConfigError(f"--time-limit {value!r} is not a duration: give seconds, or "
                              "e.g. 90s, 15m, 3h, 1h30m")
        seconds = sum(float(p.group(1)) * _SECONDS[(p.group(2) or "s").lower()]
                      for p in parts)
    else:
        raise ConfigError(f"--time-limit must be a duration, not {value!r}")
    if not seconds > 0:
        raise ConfigError(f"--time-limit must be above 0, not {value!r}")
    return seconds


def parse_token_budget(value: int | str) -> tuple[int, bool]:
    """Tokens of ``value`` (``2000000``, ``2M``, ``500k``), and whether prompt tokens count
    too (a ``+prompt`` suffix: ``2M+prompt``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        tokens, with_prompt = value, False
    else:
        match = _COUNT.match(str(value))
        if match is None:
            raise ConfigError(f"--token-budget {value!r} is not a count of tokens: e.g. "
                              "2000000, 2M, 500k, or 2M+prompt to count prompt tokens too")
        tokens = int(float(match.group(1)) * _SCALE[match.group(2).lower()])
        with_prompt = match.group(3) is not None
    if tokens < 1:
        raise ConfigError(f"--token-budget must be at least 1 token, not {value!r}")
    return tokens, with_prompt


@dataclass(frozen=True)
class Budget:
    """What a run may spend (None: no limit)."""

    time_limit_s: float | None = None
    tokens: int | None = None
    tokens_with_prompt: bool = False
    max_requests: int | None = None

    @property
    def any(self) -> bool:
        return (self.time_limit_s is not None or self.tokens is not None
                or self.max_requests is not None)

    def used_tokens(self, prompt: int, completion: int) -> int:
        return completion + (prompt if self.tokens_with_prompt else 0)

    def reached(self, elapsed_s: float, tail_s: float, prompt: int, completion: int,
                requests: int) -> str | None:
        """Which budget is spent (to say why the run stopped), else None. ``tail_s``: how
        long the rows in flight are expected to take still."""
        if self.time_limit_s is not None and elapsed_s + tail_s >= self.time_limit_s:
            return f"--time-limit {self.time_limit_s:g} s"
        if self.tokens is not None and self.used_tokens(prompt, completion) >= self.tokens:
            what = "tokens" if self.tokens_with_prompt else "generated tokens"
            return f"--token-budget {self.tokens} {what}"
        if self.max_requests is not None and requests >= self.max_requests:
            return f"--max-requests {self.max_requests}"
        return None

    def describe(self, elapsed_s: float, prompt: int, completion: int, requests: int,
                 tokens_per_s: float | None) -> str | None:
        """The budget used so far and when it runs out, for the live view."""
        parts = []
        if self.time_limit_s is not None:
            left = max(0.0, self.time_limit_s - elapsed_s)
            parts.append(f"time {elapsed_s / self.time_limit_s:.0%} ({left:.0f} s left)")
        if self.tokens is not None:
            used = self.used_tokens(prompt, completion)
            text = f"tokens {used / self.tokens:.0%}"
            if tokens_per_s:
                text += f" (out in {max(0.0, self.tokens - used) / tokens_per_s:.0f} s)"
            parts.append(text)
        if self.max_requests is not None:
            parts.append(f"requests {requests}/{self.max_requests}")
        return "budget " + ", ".join(parts) if parts else None
