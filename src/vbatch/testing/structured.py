"""The simulator's structured outputs, as vLLM gives them: an answer of the shape a request asks
for (``response_format``, ``structured_outputs``; ``guided_*`` only when the simulated version
predates 0.12, as on vLLM, where newer servers ignore them), a grammar that does not compile
refused with HTTP 400, and, at ``invalid_rate``, an answer that is not of the shape (a JSON
cut short, a text off the pattern), decided by the prompt and seed so that a retry with
another seed may succeed."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import orjson

from vbatch.structured.server import form_of_version
from vbatch.structured.specs import FORM_GUIDED

__all__ = ["BAD_GRAMMAR_MARKER", "asked_shape", "check_grammar", "shaped_text"]

# A grammar holding this does not compile (HTTP 400, as vLLM's "Grammar error").
BAD_GRAMMAR_MARKER = "SIM_BAD_GRAMMAR"
_REPEAT_MOST = 3


def asked_shape(body: dict[str, Any], version: str) -> tuple[str, Any] | None:
    """What shape the request asks for, as a server of ``version`` reads it: ``(kind,
    value)`` with kind ``json``, ``json_object``, ``regex``, ``choice`` or ``grammar``."""
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_schema":
            return "json", (response_format.get("json_schema") or {}).get("schema") or {}
        if response_format.get("type") == "json_object":
            return "json_object", True
    if form_of_version(version) == FORM_GUIDED:
        for kind in ("json", "regex", "choice", "grammar"):
            if body.get(f"guided_{kind}") is not None:
                return kind, body[f"guided_{kind}"]
        return None
    structured = body.get("structured_outputs")
    if isinstance(structured, dict):
        for kind in ("json", "json_object", "regex", "choice", "grammar"):
            if structured.get(kind) is not None:
                return kind, structured[kind]
    return None


def shaped_text(kind: str, value: Any, key: str, invalid_rate: float) -> str:
    """An answer of the shape asked (or, at ``invalid_rate``, not of it), the same for the
    same ``key`` (prompt, choice and seed)."""
    rng = random.Random(hashlib.blake2b(key.encode(), digest_size=8).digest())
    broken = rng.random() < invalid_rate
    if kind == "json":
        text = orjson.dumps(_instance(value, value, rng, 0)).decode()
        return text[: max(1, len(text) // 2)] if broken else text
    if kind == "json_object":
        text = orjson.dumps({"answer": rng.choice(["yes", "no"])}).decode()
        return text[:-1] if broken else text
    if kind == "choice":
        return "none of these" if broken else rng.choice(list(value))
    if kind == "regex":
        return "off the pattern" if broken else _matching(value, rng)
    return "grammar answer"


def _resolved(schema: Any, root: Any) -> Any:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if isinstance(ref, str) and ref.startswith("#/"):
        target = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return target
    return schema


def _instance(schema: Any, root: Any, rng: random.Random, depth: int) -> Any:
    """A value of ``schema`` (the parts of JSON Schema a test uses)."""
    schema = _resolved(schema, root)
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _instance(schema[key][0], root, rng, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: _instance(sub, root, rng, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 1 if depth < 4 else 0)
        return [_instance(schema.get("items") or {}, root, rng, depth + 1) for _ in range(count)]
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        return rng.randint(low, max(low, int(schema.get("maximum", low + 99))))
    if kind == "number":
        return round(rng.uniform(float(schema.get("minimum", 0)),
                                 float(schema.get("maximum", 100))), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return "w" + str(rng.randint(0, 999))


def _matching(pattern: str, rng: random.Random) -> str:
    """A text the whole of which ``pattern`` matches (literals, classes, repeats, groups and
    alternatives, as ``re`` parses them)."""
    from re import _parser as parser  # type: ignore[attr-defined]

    def emit(items: Any) -> str:
        out = []
        for op, arg in items:
            name = str(op)
            if name == "LITERAL":
                out.append(chr(arg))
            elif name == "IN":
                out.append(_one_of(arg, rng))
            elif name == "ANY":
                out.append("x")
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                low, high, sub = arg
                high = low + _REPEAT_MOST if high == parser.MAXREPEAT else high
                out.extend(emit(sub) for _ in range(rng.randint(low, min(high, low + 3))))
            elif name == "SUBPATTERN":
                out.append(emit(arg[-1]))
            elif name == "BRANCH":
                out.append(emit(rng.choice(arg[1])))
        return "".join(out)

    return emit(parser.parse(pattern))


def _one_of(items: Any, rng: random.Random) -> str:
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            return chr(arg)
        if name == "RANGE":
            return chr(rng.randint(arg[0], arg[1]))
        if name == "CATEGORY":
            return {"CATEGORY_DIGIT": "7", "CATEGORY_SPACE": " "}.get(str(arg), "a")
    return "a"


def check_grammar(grammar: str) -> str | None:
    """The error a server gives for ``grammar``, or None when it compiles."""
    return "Grammar error: unexpected token" if BAD_GRAMMAR_MARKER in grammar else None

