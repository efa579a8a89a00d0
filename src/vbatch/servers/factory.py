"""The one place that decides where a run's requests go."""

from __future__ import annotations

from typing import TextIO

from vbatch.servers.backend import Backend
from vbatch.servers.managed import ManagedBackend
from vbatch.servers.remote import RemoteBackend
from vbatch.settings import RunSettings
from vbatch.transport.base import Transport

__all__ = ["make_backend"]


def make_backend(settings: RunSettings, stream: TextIO, transport: Transport | None = None
                 ) -> Backend:
    """The backend of a run: its running servers (``--base-url``, ``--endpoints``), else
    managed vLLM servers; requests go through ``transport`` when one is given."""
    if settings.options.remote:
        return RemoteBackend(settings, stream, transport)
    return ManagedBackend(settings, stream, transport)
