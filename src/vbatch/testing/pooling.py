"""What the simulated server answers on a pooling model's routes, as vLLM does: embeddings
(as numbers, or base64 in float32 or float16), ``/score``, ``/rerank`` and ``/classify``.

A text's vector is 8 numbers made from its hash, normalised; a pair's score is the cosine of
their vectors; a class is picked from the same hash."""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["POOLING_ROUTES", "PoolingRefusal", "pooling_answer"]

LABELS = ("negative", "positive")


class PoolingRefusal(Exception):
    """A request the pooling route refuses with 400, as vLLM's validation would."""


def vector_of(text: str) -> list[float]:
    """A unit vector of 8 floats from ``text``'s hash."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    vector = [b - 127.5 for b in digest]
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in vector]


def _texts(value: Any, name: str) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(x, str) for x in texts):
        raise PoolingRefusal(f"{name} must be a string or a list of strings")
    return texts


def _tokens(texts: list[str]) -> dict[str, int]:
    count = sum(len(text.split()) + 1 for text in texts)
    return {"prompt_tokens": count, "total_tokens": count}


def _encoded(vector: list[float], body: dict[str, Any]) -> list[float] | str:
    if body.get("encoding_format", "float") == "float":
        return vector
    if body["encoding_format"] != "base64":
        raise PoolingRefusal(f"encoding_format {body['encoding_format']!r} is not supported")
    code = {"float32": "f", "float16": "e"}.get(body.get("embed_dtype", "float32"))
    if code is None:
        raise PoolingRefusal(f"embed_dtype {body.get('embed_dtype')!r} is not supported")
    order = ">" if body.get("endianness") == "big" else "<"
    return base64.b64encode(struct.pack(f"{order}{len(vector)}{code}", *vector)).decode()


def embed(body: dict[str, Any]) -> dict[str, Any]:
    texts = _texts(body.get("input"), "input")
    data = [{"object": "embedding", "index": index, "embedding": _encoded(vector_of(t), body)}
            for index, t in enumerate(texts)]
    return {"object": "list", "data": data, "usage": _tokens(texts)}


# The pairs of fields each route takes, as vLLM's validation does.
SCORE_PAIRS = (("text_1", "text_2"), ("queries", "documents"), ("data_1", "data_2"),
               ("queries", "items"))
RERANK_PAIRS = (("query", "documents"),)


def _pair(body: dict[str, Any], pairs: tuple[tuple[str, str], ...]) -> tuple[str, list[str]]:
    for first, second in pairs:
        if first in body and second in body:
            firsts = _texts(body[first], first)
            if len(firsts) != 1:
                raise PoolingRefusal(f"{first} must be one text here")
            return firsts[0], _texts(body[second], second)
    raise PoolingRefusal(f"the request needs {' or '.join(' and '.join(p) for p in pairs)}")


def _similarity(a: str, b: str) -> float:
    return round(sum(x * y for x, y in zip(vector_of(a), vector_of(b), strict=True)), 6)


def score(body: dict[str, Any]) -> dict[str, Any]:
    query, documents = _pair(body, SCORE_PAIRS)
    data = [{"index": i, "object": "score", "score": _similarity(query, doc)}
            for i, doc in enumerate(documents)]
    return {"object": "list", "data": data, "usage": _tokens([query, *documents])}


def rerank(body: dict[str, Any]) -> dict[str, Any]:
    query, documents = _pair(body, RERANK_PAIRS)
    scores = [_similarity(query, doc) for doc in documents]
    order = sorted(range(len(documents)), key=lambda i: -scores[i])
    results = [{"index": i, "document": {"text": documents[i]}, "relevance_score": scores[i]}
               for i in order]
    top_n = body.get("top_n") or len(results)
    return {"results": results[:top_n], "usage": _tokens([query, *documents])}


def classify(body: dict[str, Any]) -> dict[str, Any]:
    texts = _texts(body.get("input"), "input")
    data = []
    for index, text in enumerate(texts):
        positive = round((vector_of(text)[0] + 1) / 2, 6)
        probs = [round(1 - positive, 6), positive]
        data.append({"index": index, "label": LABELS[probs.index(max(probs))], "probs": probs,
                     "num_classes": len(LABELS)})
    return {"object": "list", "data": data, "usage": _tokens(texts)}


# Paths as vLLM serves them -> the answer to a request body.
POOLING_ROUTES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "/v1/embeddings": embed,
    "/score": score,
    "/v1/score": score,
    "/rerank": rerank,
    "/v1/rerank": rerank,
    "/v2/rerank": rerank,
    "/classify": classify,
}


def pooling_answer(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The answer of the pooling route ``path``; raises PoolingRefusal."""
    return POOLING_ROUTES[path](body)
