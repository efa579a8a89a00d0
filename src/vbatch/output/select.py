"""``--rerun-if EXPR``: which records a rerun sends again, said in a small expression language
over a record's fields, evaluated safely (no names but fields, no calls):

- fields by name, nested with dots: ``status``, ``finish_reason``, ``error.type``,
  ``usage.completion_tokens``, ``parsed.age``; a field a record lacks is ``null``;
- constants: strings in quotes, numbers, ``true``, ``false``, ``null`` (``True``, ``False``,
  ``None`` too), lists ``["a", "b"]``;
- comparisons ``== != < <= > >=`` (an order between a number and anything else is false),
  ``in`` and ``not in``; ``and``, ``or``, ``not``, parentheses.

Examples: ``finish_reason == "length"``, ``status == "failed" and error.type != "bad_input"``,
``usage.completion_tokens < 5``, ``error.reason in ["schema", "not_json"]``.
"""

from __future__ import annotations

import ast
import operator
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from vbatch.errors import ConfigError
from vbatch.ids import hash_array, id_hash

__all__ = ["RecordTest", "matching_ids", "record_test"]

RecordTest = Callable[[dict[str, Any]], bool]
_CONSTANTS = {"true": True, "false": False, "null": None}
_ORDER: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}


def record_test(expression: str | Callable[[dict[str, Any]], Any]) -> RecordTest:
    """The test ``expression`` makes (a Python callable is used as it is); raises ConfigError,
    one line naming ``--rerun-if``, for one that is not of the language."""
    if callable(expression):
        function = expression
        return lambda record: bool(function(record))
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"--rerun-if {expression!r} is not an expression: {exc.msg} at "
                          f"column {exc.offset}") from None
    evaluate = _compiled(tree.body, expression)
    return lambda record: bool(evaluate(record))


def _compiled(node: ast.AST, source: str) -> Callable[[dict[str, Any]], Any]:
    if isinstance(node, ast.BoolOp):
        parts = [_compiled(value, source) for value in node.values]
        if isinstance(node.op, ast.And):
            return lambda record: all(part(record) for part in parts)
        return lambda record: any(part(record) for part in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _compiled(node.operand, source)
        return lambda record: not inner(record)
    if isinstance(node, ast.Compare):
        return _comparison(node, source)
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool
                                                     | type(None)):
        value = node.value
        return lambda record: value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(
            node.operand, ast.Constant) and isinstance(node.operand.value, int | float):
        negative = -node.operand.value
        return lambda record: negative
    if isinstance(node, ast.List | ast.Tuple):
        items = [_compiled(item, source) for item in node.elts]
        return lambda record: [item(record) for item in items]
    path = _field_path(node)
    if path is not None:
        if len(path) == 1 and path[0] in _CONSTANTS:
            constant = _CONSTANTS[path[0]]
            return lambda record: constant
        return lambda record: _field(record, path)
    shown = ast.get_source_segment(source, node) or type(node).__name__
    raise ConfigError(f"--rerun-if: {shown!r} is not allowed: use fields (error.type), "
                      "constants, comparisons, in, and, or, not")


def _field_path(node: ast.AST) -> list[str] | None:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        head = _field_path(node.value)
        return None if head is None else [*head, node.attr]
    return None


def _field(record: dict[str, Any], path: list[str]) -> Any:
    value: Any = record
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _comparison(node: ast.Compare, source: str) -> Callable[[dict[str, Any]], Any]:
    left = _compiled(node.left, source)
    steps = [(type(op), _compiled(right, source)) for op, right in
             zip(node.ops, node.comparators, strict=True)]
    allowed = {ast.Eq, ast.NotEq, ast.In, ast.NotIn, *_ORDER}
    for kind, _ in steps:
        if kind not in allowed:
            raise ConfigError(f"--rerun-if: the comparison {kind.__name__} is not allowed "
                              "(== != < <= > >= in, not in)")

    def compare(record: dict[str, Any]) -> bool:
        value = left(record)
        for kind, right in steps:
            other = right(record)
            if not _holds(kind, value, other):
                return False
            value = other
        return True

    return compare


def _holds(kind: type, value: Any, other: Any) -> bool:
    if kind is ast.Eq:
        return bool(value == other)
    if kind is ast.NotEq:
        return bool(value != other)
    if kind in (ast.In, ast.NotIn):
        try:
            found = value in other
        except TypeError:
            found = False
        return found if kind is ast.In else not found
    numbers = (int, float)
    comparable = (isinstance(value, numbers) and isinstance(other, numbers)
                  and not isinstance(value, bool) and not isinstance(other, bool)) or (
        isinstance(value, str) and isinstance(other, str))
    return bool(comparable and _ORDER[kind](value, other))


def matching_ids(path: Path, test: RecordTest) -> np.ndarray:
    """The id hashes of the records of ``path`` that ``test`` holds for (none when there is
    no such file; lines that are not records are left to the ledger)."""
    found: array[int] = array("q")
    if not path.exists():
        return hash_array(found)
    with open(path, "rb") as handle:
        for line in handle:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and "id" in record and test(record):
                found.append(id_hash(str(record["id"])))
    return hash_array(found)
