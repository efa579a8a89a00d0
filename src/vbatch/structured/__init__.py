"""Structured outputs: what shape every answer must have (:mod:`~vbatch.structured.specs`),
where specs come from (:mod:`~vbatch.structured.parse`), how answers are checked
(:mod:`~vbatch.structured.answers`), which form the server takes
(:mod:`~vbatch.structured.server`) and the Arrow columns a schema gives
(:mod:`~vbatch.structured.columns`)."""

from vbatch.structured.specs import (
    FORM_GUIDED,
    FORM_STRUCTURED,
    Choice,
    Grammar,
    JsonObject,
    JsonSchema,
    OutputSpec,
    Problem,
    Regex,
)

__all__ = ["FORM_GUIDED", "FORM_STRUCTURED", "Choice", "Grammar", "JsonObject", "JsonSchema",
           "OutputSpec", "Problem", "Regex"]
