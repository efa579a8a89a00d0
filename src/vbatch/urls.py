"""Server addresses: ``--base-url`` read into the API's and the server's own URLs, its
credentials taken out, and any URL shown without its secret."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from vbatch.errors import ConfigError

__all__ = ["ServerURLs", "normalize_base_url", "redact_url"]


@dataclass(frozen=True)
class ServerURLs:
    """Where the OpenAI API (``api``, ending in ``/v1``) and the server's own routes are."""

    root: str
    api: str
    credentials: str | None = field(default=None, repr=False)


def redact_url(url: str) -> str:
    """``url`` without its secret: what stands before the last ``@`` (a password, which may
    itself hold an ``@``, or a token given as the user) becomes ``***``; a user name before a
    password is kept. Works on a URL that does not parse too (``http//user:pw@host``)."""
    head, at, host = url.rpartition("@")
    if not at:
        return url
    scheme, sep, userinfo = head.partition("://")
    if not sep:
        scheme, userinfo = "", head
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon and "@" not in user and "/" not in user else "***"
    return f"{scheme}{sep}{shown}@{host}"


def normalize_base_url(base_url: str) -> ServerURLs:
    """Accept ``http://host:port``, ``http://host:port/v1`` or a custom ``.../v1`` prefix.

    ``user:password@`` in the URL is taken out of it (so that it appears in no message or
    record) and kept as ``credentials`` for HTTP basic authentication.
    """
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"--base-url {redact_url(base_url)!r} is not an http(s) URL "
            "(example: http://127.0.0.1:8000/v1)"
        )
    userinfo, at, host = parts.netloc.rpartition("@")
    credentials = unquote(userinfo) if at else None
    origin = f"{parts.scheme}://{host}"
    path = parts.path.rstrip("/")
    if not path:
        return ServerURLs(root=origin, api=origin + "/v1", credentials=credentials)
    if path.endswith("/v1"):
        return ServerURLs(root=origin + path[: -len("/v1")], api=origin + path,
                          credentials=credentials)
    return ServerURLs(root=origin, api=origin + path, credentials=credentials)
