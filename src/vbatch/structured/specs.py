"""What shape an answer must have: a JSON Schema, any JSON object, a regular expression, one of
a list of choices, or a grammar. Each :class:`OutputSpec` says what a request carries for it
(:meth:`~OutputSpec.request_fields`, in the form the server takes) and checks an answer
(:meth:`~OutputSpec.check`): the parsed value, or why it is not one.

JSON answers are checked with jsonschema-rs: 0.6 µs per answer of a five-field schema, against
1.4 µs for fastjsonschema and 25 µs for jsonschema, and ~350 µs of client time per request
(``benchmarks/validators.py``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "FORM_GUIDED",
    "FORM_STRUCTURED",
    "Choice",
    "Grammar",
    "JsonObject",
    "JsonSchema",
    "OutputSpec",
    "Problem",
    "Regex",
]

# The request field vLLM takes since 0.10.2 (``structured_outputs``), and the ``guided_*``
# fields it took before (removed in 0.12, and since then ignored without an error).
FORM_STRUCTURED = "structured_outputs"
FORM_GUIDED = "guided"


@dataclass(frozen=True)
class Problem:
    """Why an answer is not of the shape asked: ``reason`` (``not_json``, ``schema``,
    ``pattern``, ``choice``, or a finish reason such as ``length``) and a message."""

    reason: str
    message: str


class OutputSpec(ABC):
    """The shape every answer of a run (or of a row) must have."""

    # What the option is called, for messages: "--json-schema", "--choice", ...
    option: str

    @abstractmethod
    def canonical(self) -> dict[str, Any]:
        """The spec as plain JSON, the same for equal specs: what the manifest and the request
        fingerprint hold, whatever form the server takes."""

    @abstractmethod
    def request_fields(self, chat: bool, form: str) -> dict[str, Any]:
        """The fields a request carries for the spec, to the chat (``chat``) or completions API
        of a server that takes ``form`` (:data:`FORM_STRUCTURED` or :data:`FORM_GUIDED`)."""

    @abstractmethod
    def check(self, text: str) -> tuple[Any, Problem | None]:
        """The answer's value (the JSON value, or the text), or the problem with it."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputSpec) and self.canonical() == other.canonical()

    def __hash__(self) -> int:
        return hash(orjson.dumps(self.canonical(), option=orjson.OPT_SORT_KEYS))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({orjson.dumps(self.canonical()).decode()[:120]})"


def _structured(form: str, key: str, value: Any, guided: str) -> dict[str, Any]:
    if form == FORM_GUIDED:
        return {guided: value}
    return {"structured_outputs": {key: value}}


def _json_value(text: str) -> tuple[Any, Problem | None]:
    try:
        return orjson.loads(text), None
    except orjson.JSONDecodeError as exc:
        return None, Problem("not_json", f"the answer is not JSON ({exc})")


class JsonSchema(OutputSpec):
    """A JSON Schema every answer validates against (``name``: what the schema is called in
    OpenAI's ``response_format``; ``model``: the pydantic class it came from, if any)."""

    option = "--json-schema"

    def __init__(self, schema: dict[str, Any], name: str | None = None,
                 model: type | None = None):
        if not isinstance(schema, dict):
            raise ValueError(f"a JSON Schema is a JSON object, not {type(schema).__name__}")
        import jsonschema_rs

        try:
            jsonschema_rs.meta.validate(schema)
            self._validator = jsonschema_rs.validator_for(schema)
        except (jsonschema_rs.ValidationError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"not a valid JSON Schema: {first}") from None
        self.schema = schema
        self.name = name or str(schema.get("title") or "answer")
        self.model = model

    def __getstate__(self) -> dict[str, Any]:
        return {"schema": self.schema, "name": self.name, "model": self.model}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["schema"], state["name"], state["model"])  # type: ignore[misc]

    def canonical(self) -> dict[str, Any]:
        return {"json_schema": self.schema}

    def request_fields(self, chat: bool, form: str) -> dict[str, Any]:
        if chat:
            return {"response_format": {"type": "json_schema", "json_schema": {
                "name": _schema_name(self.name), "schema": self.schema}}}
        return _structured(form, "json", self.schema, "guided_json")

    def check(self, text: str) -> tuple[Any, Problem | None]:
        value, problem = _json_value(text)
        if problem is not None:
            return None, problem
        if self._validator.is_valid(value):
            return value, None
        error = next(iter(self._validator.iter_errors(value)))
        where = "/".join(map(str, error.instance_path)) or "the top"
        return None, Problem("schema", f"the answer does not match the schema at {where}: "
                                       f"{error.message}")


def _schema_name(name: str) -> str:
    """A name OpenAI's ``json_schema.name`` takes: letters, digits, ``_`` and ``-``."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]
    return cleaned or "answer"


class JsonObject(OutputSpec):
    """Any JSON object (``--json``)."""

    option = "--json"

    def canonical(self) -> dict[str, Any]:
        return {"json_object": True}

    def request_fields(self, chat: bool, form: str) -> dict[str, Any]:
        if chat or form == FORM_GUIDED:
            return {"response_format": {"type": "json_object"}}
        return {"structured_outputs": {"json_object": True}}

    def check(self, text: str) -> tuple[Any, Problem | None]:
        value, problem = _json_value(text)
        if problem is None and not isinstance(value, dict):
            return None, Problem("schema", f"the answer is JSON but not an object "
                                           f"({type(value).__name__})")
        return value, problem


class Regex(OutputSpec):
    """A regular expression the whole answer matches (``--regex``)."""

    option = "--regex"

    def __init__(self, pattern: str):
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("a regular expression is a non-empty string")
        try:
            self._compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        self.pattern = pattern

    def __getstate__(self) -> dict[str, Any]:
        return {"pattern": self.pattern}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["pattern"])  # type: ignore[misc]

    def canonical(self) -> dict[str, Any]:
        return {"regex": self.pattern}

    def request_fields(self, chat: bool, form: str) -> dict[str, Any]:
        return _structured(form, "regex", self.pattern, "guided_regex")

    def check(self, text: str) -> tuple[Any, Problem | None]:
        if self._compiled.fullmatch(text):
            return text, None
        return None, Problem("pattern", f"the answer {_shown(text)} does not match the regular "
                                        f"expression {self.pattern!r}")


class Choice(OutputSpec):
    """One of a list of texts (``--choice``, repeated)."""

    option = "--choice"

    def __init__(self, choices: list[str] | tuple[str, ...]):
        listed = (choices,) if isinstance(choices, str) else tuple(choices)
        if not listed or not all(isinstance(c, str) and c for c in listed):
            raise ValueError("a choice list is a non-empty list of non-empty strings")
        self.choices = listed

    def canonical(self) -> dict[str, Any]:
        return {"choice": list(self.choices)}

    def request_fields(self, chat: bool, form: str) -> dict[str, Any]:
        return _structured(form, "choice", list(self.choices), "guided_choice")

    def check(self, text: str) -> tuple[Any, Problem | None]:
        if text in self.choices:
            return text, None
        listed = ", ".join(map(repr, self.choices[:8]))
        return None, Problem("choice", f"the answer {_shown(text)} is not one of {listed}")


class Grammar(OutputSpec):
    """A grammar as vLLM takes it (EBNF / GBNF or Lark): the server checks it before the run;
    an answer is not parsed here (its finish reason is checked)."""

    option = "--grammar"

    def __init__(self, grammar: str):
        if not isinstance(grammar, str) or not grammar.strip():
            raise ValueError("a grammar is a non-empty text")
        self.grammar = grammar

    def canonical(self) -> dict[str, Any]:
        return {"grammar": self.grammar}

    def request_fields(self, chat: bool, form: str) -> dict[str, Any]:
        return _structured(form, "grammar", self.grammar, "guided_grammar")

    def check(self, text: str) -> tuple[Any, Problem | None]:
        return text, None


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")
