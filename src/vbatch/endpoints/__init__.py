"""Endpoint kinds: each API rows can go to. A new kind is one module here and one line in
:data:`ENDPOINTS`."""

from __future__ import annotations

from vbatch.endpoints.base import ChoicesKind, EndpointKind
from vbatch.endpoints.chat import Chat
from vbatch.endpoints.completions import Completions
from vbatch.endpoints.embeddings import Embeddings

__all__ = ["ENDPOINTS", "ChoicesKind", "EndpointKind", "endpoint_kind"]

ENDPOINTS: dict[str, EndpointKind] = {
    kind.name: kind for kind in (Chat(), Completions(), Embeddings())
}


def endpoint_kind(name: str) -> EndpointKind:
    """The kind ``--endpoint`` names (checked by the config before this is called)."""
    return ENDPOINTS[name]
