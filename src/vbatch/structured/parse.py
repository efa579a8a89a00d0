"""Specs from where users give them: the CLI's options, a Python value (a pydantic model class,
a JSON Schema dict, OpenAI's ``response_format``, a spec), a row's own field
(``--schema-field``) and an OpenAI Batch line's body."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from vbatch.errors import ConfigError
from vbatch.structured.specs import Choice, Grammar, JsonObject, JsonSchema, OutputSpec, Regex

__all__ = ["BODY_SPEC_FIELDS", "row_spec", "spec_of_body", "spec_of_options", "spec_of_row_value",
           "spec_of_value"]

# The fields of a request body that ask for a shape.
BODY_SPEC_FIELDS = ("response_format", "structured_outputs", "guided_json", "guided_regex",
                    "guided_choice", "guided_grammar")
# Distinct per-row specs kept compiled: rows of a dataset share a few schemas.
_CACHED_SPECS = 1024


def _text_or_file(option: str, value: str) -> str:
    """``value``, or the text of the file it names (``@file`` or an existing path)."""
    name = value[1:] if value.startswith("@") else value
    path = Path(name)
    if value.startswith("@") or (not value.lstrip().startswith(("{", "[")) and path.is_file()):
        try:
            return path.read_text()
        except OSError as exc:
            raise ConfigError(f"{option}: cannot read {name}: {exc.strerror}") from None
    return value


def spec_of_options(json_schema: str | None = None, json_object: bool = False,
                    regex: str | None = None, choice: tuple[str, ...] = (),
                    grammar: str | None = None) -> OutputSpec | None:
    """The spec the CLI's ``--json-schema`` (JSON or a file), ``--json``, ``--regex``,
    ``--choice`` or ``--grammar`` (a file or the grammar) give; at most one of them."""
    given = [name for name, value in (("--json-schema", json_schema), ("--json", json_object),
                                      ("--regex", regex), ("--choice", choice),
                                      ("--grammar", grammar)) if value]
    if len(given) > 1:
        raise ConfigError(f"{given[0]} and {given[1]} both say what an answer is: give one")
    try:
        if json_schema:
            text = _text_or_file("--json-schema", json_schema)
            try:
                schema = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"--json-schema is not valid JSON ({exc}): give a JSON "
                                  "Schema object or a file holding one") from None
            return spec_of_value(schema, "--json-schema")
        if json_object:
            return JsonObject()
        if regex:
            return Regex(regex)
        if choice:
            return Choice(choice)
        if grammar:
            return Grammar(_text_or_file("--grammar", grammar))
    except ValueError as exc:
        raise ConfigError(f"{given[0]}: {exc}") from None
    return None


def spec_of_value(value: Any, where: str = "response_format") -> OutputSpec | None:
    """A spec from a Python value: a spec, a pydantic model class, a JSON Schema dict, OpenAI's
    ``response_format`` (``{"type": "json_schema" | "json_object", ...}``), or a list of
    choices; None for None. Raises ConfigError naming ``where``."""
    if value is None or isinstance(value, OutputSpec):
        return value
    try:
        if isinstance(value, type) and hasattr(value, "model_json_schema"):
            return JsonSchema(value.model_json_schema(), value.__name__, model=value)
        if isinstance(value, Mapping):
            return _of_mapping(dict(value))
        if isinstance(value, list | tuple):
            return Choice(tuple(value))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    raise ConfigError(f"{where} must be a pydantic model class, a JSON Schema (dict), "
                      "vbatch.Choice([...]), vbatch.Regex(...), vbatch.Grammar(...) or "
                      f"vbatch.JsonObject(), not {type(value).__name__}")


def _of_mapping(value: dict[str, Any]) -> OutputSpec:
    kind = value.get("type")
    if kind == "json_object" and len(value) == 1:
        return JsonObject()
    if kind == "json_schema" and isinstance(value.get("json_schema"), dict):
        inner = value["json_schema"]
        return JsonSchema(inner.get("schema") or {}, inner.get("name"))
    return JsonSchema(value)


def spec_of_row_value(value: Any) -> OutputSpec | None:
    """A row's own spec (its ``--schema-field`` value): a JSON Schema object (or its JSON
    text), OpenAI's ``response_format``, or a list of choices; None for null. Raises
    ValueError saying what is wrong."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError("expected a JSON Schema object, its JSON text or a list of "
                             "choices") from None
    if isinstance(value, dict):
        return _of_mapping(value)
    if isinstance(value, list):
        return Choice(tuple(value))
    raise ValueError(f"expected a JSON Schema object or a list of choices, got "
                     f"{type(value).__name__}")


def spec_of_body(body: dict[str, Any]) -> OutputSpec | None:
    """The spec an OpenAI Batch line's body asks for: its ``response_format`` (``json_schema``,
    ``json_object``), ``structured_outputs`` or ``guided_*`` fields; None when it asks for none.
    Raises ValueError for one that is not valid."""
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in (
            "json_schema", "json_object"):
        return _of_mapping(response_format)
    structured = body.get("structured_outputs")
    if isinstance(structured, dict):
        if structured.get("json") is not None:
            return JsonSchema(structured["json"])
        if structured.get("json_object"):
            return JsonObject()
        if structured.get("regex") is not None:
            return Regex(structured["regex"])
        if structured.get("choice") is not None:
            return Choice(tuple(structured["choice"]))
        if structured.get("grammar") is not None:
            return Grammar(structured["grammar"])
    if body.get("guided_json") is not None:
        schema = body["guided_json"]
        return JsonSchema(orjson.loads(schema) if isinstance(schema, str) else schema)
    if body.get("guided_regex") is not None:
        return Regex(body["guided_regex"])
    if body.get("guided_choice") is not None:
        return Choice(tuple(body["guided_choice"]))
    if body.get("guided_grammar") is not None:
        return Grammar(body["guided_grammar"])
    return None


def row_spec(value: Any, of_body: bool = False) -> OutputSpec | None:
    """:func:`spec_of_row_value` (or, with ``of_body``, :func:`spec_of_body`) of ``value``,
    compiled once for every row that carries the same one."""
    if value is None:
        return None
    return _compiled(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), of_body)


@lru_cache(maxsize=_CACHED_SPECS)
def _compiled(key: bytes, of_body: bool) -> OutputSpec | None:
    value = orjson.loads(key)
    return spec_of_body(value) if of_body else spec_of_row_value(value)
