"""``as_models=True``: a record's ``parsed`` value as an object of the pydantic model class
``response_format`` named."""

from __future__ import annotations

from typing import Any

from vbatch.errors import ConfigError
from vbatch.structured.specs import JsonSchema, OutputSpec

__all__ = ["as_model", "model_of"]


def model_of(spec: OutputSpec | None) -> type:
    """The pydantic model class ``spec`` came from; ConfigError when it came from none."""
    model = spec.model if isinstance(spec, JsonSchema) else None
    if model is None:
        raise ConfigError("as_models=True needs response_format= a pydantic model class")
    return model


def as_model(record: dict[str, Any], model: Any, many: bool = False) -> dict[str, Any]:
    """``record`` with its ``parsed`` value (each of them, with ``many`` answers per row) as
    a ``model`` object; a failed record's stays null."""
    value = record.get("parsed")
    if value is None:
        return record
    if many:
        record["parsed"] = [model.model_validate(item) for item in value]
    else:
        record["parsed"] = model.model_validate(value)
    return record
