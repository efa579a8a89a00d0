"""``/v1/embeddings``: a row's prompt becomes ``input``; the record carries its ``embedding``.

Vectors travel base64-encoded (OpenAI's ``encoding_format``: a third of the bytes of JSON
numbers, and no float parsing); ``float16`` asks vLLM for half-size values (its
``embed_dtype``). A server that answers with a list of numbers anyway is read as well."""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

from vbatch.defaults import DEFAULT_EMBEDDING_DTYPE
from vbatch.endpoints.base import InputKind, usage_of
from vbatch.errors import InvalidResponseError

__all__ = ["EMBEDDING_DTYPES", "Embeddings"]

# dtype -> its struct code (little-endian, as OpenAI's base64 is and as vbatch asks vLLM).
EMBEDDING_DTYPES = {"float32": "f", "float16": "e"}


class Embeddings(InputKind):
    """The embeddings API of a pooling model: one vector per row."""

    name = "embeddings"
    route = "/embeddings"

    def __init__(self, dtype: str = DEFAULT_EMBEDDING_DTYPE):
        self.dtype = dtype
        self._code = EMBEDDING_DTYPES[dtype]
        self._width = struct.calcsize(self._code)

    def configured(self, embedding_dtype: str) -> Embeddings:
        return Embeddings(embedding_dtype)

    def body_fields(self) -> dict[str, Any]:
        if self.dtype == "float32":
            return {"encoding_format": "base64"}
        return {"encoding_format": "base64", "embed_dtype": self.dtype, "endianness": "little"}

    def answer(self, response: dict[str, Any], n: int) -> dict[str, Any]:
        embedding = self.first_result(response).get("embedding")
        if isinstance(embedding, str):
            embedding = self._decoded(embedding)
        elif not isinstance(embedding, list):
            raise InvalidResponseError("the answer's data has no embedding")
        return {"embedding": embedding, "usage": usage_of(response), "error": None}

    def _decoded(self, text: str) -> list[float]:
        try:
            raw = base64.b64decode(text, validate=True)
        except binascii.Error:
            raise InvalidResponseError("the embedding is not valid base64") from None
        if len(raw) % self._width:
            raise InvalidResponseError(
                f"the embedding's {len(raw)} bytes are not whole {self.dtype} values")
        return list(struct.unpack(f"<{len(raw) // self._width}{self._code}", raw))
