"""The one place that picks how rows become requests."""

from __future__ import annotations

from vbatch.config import RunConfig
from vbatch.prepare.batch_builder import BatchRequestBuilder
from vbatch.prepare.builder import RequestBuilder

__all__ = ["request_builder"]


def request_builder(config: RunConfig, model: str | None) -> RequestBuilder:
    """The builder of ``config``'s rows: a batch file's lines are whole requests."""
    if config.input_format == "openai-batch":
        return BatchRequestBuilder(config, model)
    return RequestBuilder(config, model)
