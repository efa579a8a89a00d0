"""The Arrow columns a spec gives a record's ``parsed`` value, so that a Parquet file, a
DataFrame, a Table or a Dataset hold typed columns, not JSON text: a schema whose top is an
object gives one column per property (named after it; ``NAME_parsed`` when the record has a
field of that name), anything else one ``parsed`` column. JSON Schema types map to Arrow's:
string → string, an enum of strings or a choice list → dictionary (pandas: categorical),
integer → int64, number → float64, boolean → bool, array → list, object → struct; what has
no single type (``anyOf`` of several, an object without properties) is JSON text."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vbatch.structured.specs import Choice, Grammar, JsonSchema, OutputSpec, Regex

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ParsedColumns", "parsed_columns"]

_DEPTH = 16
_SCALARS = {"string": "string", "integer": "int64", "number": "float64", "boolean": "bool_"}


def _labels() -> pa.DataType:
    import pyarrow as pa

    return pa.dictionary(pa.int32(), pa.string())


@dataclass(frozen=True)
class ParsedColumns:
    """How ``parsed`` becomes columns: ``names`` maps each property to its column (empty: one
    column, ``parsed``), ``types`` each column to its Arrow type (None: JSON text)."""

    names: dict[str, str] = field(default_factory=dict)
    types: dict[str, pa.DataType | None] = field(default_factory=dict)

    def spread(self, value: Any, row: dict[str, Any]) -> None:
        """Put ``value`` (a record's ``parsed``) into the flat ``row`` as these columns."""
        if not self.names:
            row["parsed"] = value
            return
        mapping = value if isinstance(value, dict) else {}
        for name, column in self.names.items():
            row[column] = mapping.get(name)


def parsed_columns(spec: OutputSpec | None, taken: Iterable[str], n: int = 1
                   ) -> ParsedColumns | None:
    """The columns ``spec`` gives (None when it gives no type: no spec, any JSON object, or
    ``n`` > 1 answers per row); ``taken``: the names the record's other columns have."""
    if spec is None or n != 1:
        return None
    # pyarrow (~30 MB) is loaded only by a run whose answers have a shape.
    import pyarrow as pa

    if isinstance(spec, Choice):
        return ParsedColumns(types={"parsed": _labels()})
    if isinstance(spec, Regex | Grammar):
        return ParsedColumns(types={"parsed": pa.string()})
    if not isinstance(spec, JsonSchema):
        return None
    root = spec.schema
    top = _resolved(root, root)
    properties = top.get("properties") if _kind(top) == "object" else None
    if not isinstance(properties, dict) or not properties:
        return ParsedColumns(types={"parsed": arrow_type(top, root)})
    used = set(taken)
    names: dict[str, str] = {}
    types: dict[str, pa.DataType | None] = {}
    for name, sub in properties.items():
        column = f"{name}_parsed" if name in used else name
        names[name] = column
        types[column] = arrow_type(sub, root)
    return ParsedColumns(names, types)


def _resolved(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a local ``$ref`` (``#/$defs/Name``, as pydantic writes) followed."""
    for _ in range(_DEPTH):
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if not (isinstance(ref, str) and ref.startswith("#/")):
            break
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        schema = target
    return schema if isinstance(schema, dict) else {}


def _kind(schema: dict[str, Any]) -> str | None:
    """The one JSON type ``schema`` allows (null aside), else None."""
    kind = schema.get("type")
    if kind is None and "properties" in schema:
        return "object"
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return kinds[0] if len(kinds) == 1 else None
    return kind if isinstance(kind, str) else None


def arrow_type(schema: Any, root: dict[str, Any], depth: int = 0) -> pa.DataType | None:
    """The Arrow type of values of ``schema``, or None when they have no single one."""
    import pyarrow as pa

    schema = _resolved(schema, root)
    if depth > _DEPTH or schema.get("const") is not None:
        return None
    options = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(options, list):
        typed = [o for o in options if _kind(_resolved(o, root)) != "null"]
        return arrow_type(typed[0], root, depth) if len(typed) == 1 else None
    enum = schema.get("enum")
    if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
        # Labels of a column are a dictionary (categorical); nested in a list or struct, text.
        return _labels() if depth == 0 else pa.string()
    kind = _kind(schema)
    if kind in _SCALARS:
        scalar: pa.DataType = getattr(pa, _SCALARS[kind])()
        return scalar
    if kind == "array":
        item = arrow_type(schema.get("items") or {}, root, depth + 1)
        return pa.list_(item) if item is not None else None
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            return None
        fields = [(name, arrow_type(sub, root, depth + 1)) for name, sub in properties.items()]
        if any(kind is None for _, kind in fields):
            return None
        return pa.struct(fields)
    return None
