"""The Python API: a list, DataFrame, Arrow table or Dataset in, the same kind out
(``generate``, ``agenerate``, ``stream``), and ``Server`` to keep one vLLM server for many
calls."""

from __future__ import annotations

from vbatch.api.generate import agenerate, generate, stream
from vbatch.api.server import Server

__all__ = ["Server", "agenerate", "generate", "stream"]
