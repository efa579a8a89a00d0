"""The rows of a program run (``--program``): each row is its program's input, as it is, so
the check pass, resume and the fingerprints of changed rows work as for plain rows; the
requests are the program's calls (:mod:`vbatch.programs`)."""

from __future__ import annotations

from typing import Any

import orjson

from vbatch.prepare.builder import RequestBuilder, fingerprint_of
from vbatch.program_loader import program_name
from vbatch.settings import RequestSettings
from vbatch.source.readers import RawRow

__all__ = ["ProgramBuilder"]


class ProgramBuilder(RequestBuilder):
    """A row's "request" is the row itself, handed to the program."""

    def __init__(self, requests: RequestSettings, model: str | None):
        super().__init__(requests, model)
        assert requests.program is not None
        self.name = program_name(requests.program)
        self.countable = False

    @property
    def structured(self) -> bool:
        """Calls may ask for a shape: the server's form is found before the run."""
        return True

    def content(self, row: RawRow) -> dict[str, Any]:
        """The row as it is."""
        assert row.data is not None
        return {"row": row.data}

    def counted(self, content: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def max_tokens_of(self, content: dict[str, Any]) -> int | None:
        return None

    def spec_of(self, content: dict[str, Any]) -> None:
        return None

    def body(self, content: dict[str, Any], max_tokens: int | None = None) -> bytes:
        """The row, for its program."""
        return orjson.dumps(content["row"])

    def fingerprint(self, content: dict[str, Any]) -> int:
        """Of the program's name, its rollouts and the row: a changed row runs again."""
        return fingerprint_of(orjson.dumps({"program": self.name,
                                            "rollouts": self.requests.rollouts,
                                            "row": content["row"]}))

    def request_fingerprint(self, content: dict[str, Any], body: bytes, clamped: bool) -> int:
        return self.fingerprint(content)
