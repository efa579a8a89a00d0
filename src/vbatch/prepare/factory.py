"""The one place that picks how rows become requests."""

from __future__ import annotations

from vbatch.prepare.batch_builder import BatchRequestBuilder
from vbatch.prepare.builder import RequestBuilder
from vbatch.prepare.program_builder import ProgramBuilder
from vbatch.settings import RunSettings

__all__ = ["request_builder"]


def request_builder(settings: RunSettings, model: str | None) -> RequestBuilder:
    """The builder of a run's rows: a batch file's lines are whole requests, a program's rows
    its input."""
    if settings.openai_batch:
        return BatchRequestBuilder(settings.requests, model, settings.pooling)
    if settings.requests.program is not None:
        return ProgramBuilder(settings.requests, model)
    return RequestBuilder(settings.requests, model)
