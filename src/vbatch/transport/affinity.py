"""Prefix-affine routing: with several servers, requests whose prompts start alike go to the same
server, so that its prefix cache holds what they share (vLLM's cache is per server: scattered
over N servers, a shared system prompt or few-shot block is prefilled again on each).

A request's key hashes the first :data:`PREFIX_CHARS` characters of its prompt (its messages'
roles and contents in order, or its ``prompt`` or first ``input``); a shorter prompt has no key
and goes to the least loaded server, as every request did before. A keyed request's server is
chosen by weighted rendezvous hashing (highest random weight): every server scores every key,
the best healthy score wins, so a server that joins or leaves moves only the keys it wins.
Balance is never given up for affinity: when the chosen server's load (requests outstanding
over its weight) is more than :data:`SPILL_RATIO` times the least loaded one's plus
:data:`SPILL_SLACK`, the request goes to the least loaded server instead.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import orjson

__all__ = ["PREFIX_CHARS", "SPILL_RATIO", "SPILL_SLACK", "affinity_key", "rendezvous_score",
           "server_salt", "spills"]

# About 128 tokens, 8 of vLLM's 16-token KV blocks: a shared start this long is worth keeping.
PREFIX_CHARS = 512
SPILL_RATIO = 1.25
SPILL_SLACK = 4
_MASK = (1 << 64) - 1


def _prompt_start(content: Any) -> str:
    if not isinstance(content, dict):
        return ""
    messages = content.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        size = 0
        for message in messages:
            if isinstance(message, dict):
                part = f"{message.get('role')}\x01{message.get('content')}"
                parts.append(part)
                size += len(part) + 1
                if size >= PREFIX_CHARS:
                    break
        return "\x00".join(parts)
    for field in ("prompt", "input", "text_1", "query"):
        value = content.get(field)
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str):
            return value
    return ""


def affinity_key(body: bytes) -> int | None:
    """The key of a request's JSON ``body``: a 64-bit hash of its prompt's start, or None when
    its prompt is shorter than :data:`PREFIX_CHARS` (or the body is not a JSON object)."""
    try:
        content = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    start = _prompt_start(content)
    if len(start) < PREFIX_CHARS:
        return None
    digest = hashlib.blake2b(start[:PREFIX_CHARS].encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def server_salt(url: str) -> int:
    """A server's own 64 bits in the scores: from its URL, the same in every process."""
    return int.from_bytes(hashlib.blake2b(url.encode(), digest_size=8).digest(), "little")


def rendezvous_score(key: int, salt: int, weight: float) -> float:
    """How much a server of ``salt`` and ``weight`` wants ``key`` (the highest wins)."""
    mixed = (key ^ salt) & _MASK
    mixed = ((mixed ^ (mixed >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    mixed = ((mixed ^ (mixed >> 27)) * 0x94D049BB133111EB) & _MASK
    mixed ^= mixed >> 31
    uniform = ((mixed >> 11) | 1) / float(1 << 53)
    return -weight / math.log(uniform)


def spills(chosen_load: float, least_load: float) -> bool:
    """Whether a request goes to the least loaded server instead of its chosen one."""
    return chosen_load > SPILL_RATIO * least_load + SPILL_SLACK
