"""Which form a server takes structured outputs in: ``structured_outputs`` since vLLM 0.10.2,
``guided_*`` before (removed in 0.12, and ignored since, without an error); a server that does
not say its version (``GET /version``) gets the current form."""

from __future__ import annotations

import re

from vbatch.structured.specs import FORM_GUIDED, FORM_STRUCTURED

__all__ = ["form_of_version"]

# The first vLLM version that takes ``structured_outputs``.
_STRUCTURED_SINCE = (0, 10, 2)
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def form_of_version(version: str | None) -> str:
    """The form a vLLM server of ``version`` takes (the current one when unknown)."""
    match = _VERSION.match(version or "")
    if match is None:
        return FORM_STRUCTURED
    found = tuple(int(part or 0) for part in match.groups())
    return FORM_STRUCTURED if found >= _STRUCTURED_SINCE else FORM_GUIDED
