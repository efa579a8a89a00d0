"""Endpoint kinds: each API rows can go to. A new kind is one module here and one line in
:data:`ENDPOINTS`."""

from __future__ import annotations

from vbatch.endpoints.base import ChoicesKind, EndpointKind
from vbatch.endpoints.chat import Chat
from vbatch.endpoints.classify import Classify
from vbatch.endpoints.completions import Completions
from vbatch.endpoints.embeddings import EMBEDDING_DTYPES, Embeddings
from vbatch.endpoints.scoring import Rerank, Score

__all__ = ["EMBEDDING_DTYPES", "ENDPOINTS", "ChoicesKind", "EndpointKind", "endpoint_kind"]

ENDPOINTS: dict[str, EndpointKind] = {
    kind.name: kind
    for kind in (Chat(), Completions(), Embeddings(), Score(), Rerank(), Classify())
}


def endpoint_kind(name: str, embedding_dtype: str) -> EndpointKind:
    """The kind ``--endpoint`` names, for the run's options (both checked by the config
    before this is called)."""
    return ENDPOINTS[name].configured(embedding_dtype)
