"""Before the first row of a structured run is sent: tell the request builder which form the
server takes (:func:`server_form`) and, for the run's own spec, ask
the server once, with a one-token request, whether it can use it, so that a grammar (or a
schema feature) the server cannot compile stops the run before anything else is sent."""

from __future__ import annotations

from collections.abc import Callable

from vbatch.errors import ConfigError, HTTPStatusError, RequestError
from vbatch.prepare.builder import RequestBuilder
from vbatch.structured.server import form_of_version
from vbatch.structured.specs import FORM_STRUCTURED
from vbatch.transport.pool import ServerConnection

__all__ = ["model_identity", "prepare_structured", "server_form"]


async def server_form(server: ServerConnection) -> tuple[str, str | None]:
    """The form ``server`` takes, and its version (None when ``GET /version`` does not say)."""
    try:
        answer = await server.client.get_json("/version")
    except RequestError:
        return FORM_STRUCTURED, None
    version = answer.get("version") if isinstance(answer, dict) else None
    version = version if isinstance(version, str) else None
    return form_of_version(version), version


async def prepare_structured(builder: RequestBuilder, server: ServerConnection,
                             say: Callable[[str], None]) -> None:
    """Tell ``builder`` the server's form and, for a run's own spec, ask the server once to
    compile it; raises ConfigError (naming the option) when it cannot."""
    if not builder.structured:
        return
    form, version = await server_form(server)
    builder.use_form(form)
    named = f"vLLM {version}" if version else "a server that does not say its version"
    what = "response_format / structured_outputs" if form == FORM_STRUCTURED else "guided_*"
    say(f"structured outputs: sent as {what} ({named}); every answer is checked")
    spec = builder.spec
    if spec is None:
        return
    content = builder.kind.prompt_content("Hi", builder.requests.system)
    body = builder.body(content, max_tokens=1)
    try:
        await server.client.post_json(server.path_of(builder.route), body)
    except HTTPStatusError as exc:
        if exc.status_code in (400, 422):
            raise ConfigError(f"{spec.option}: the server cannot use it: {exc.message}") from None
    except RequestError:
        return


async def model_identity(server: ServerConnection, model: str | None) -> str:
    """What names the served model for the response cache: its name and what the server says
    of it (``root``, ``max_model_len``), so that a cache never answers for another model."""
    try:
        listing = await server.client.get_json(server.path_of("/models"))
    except RequestError:
        return f"{model}||"
    found = [m for m in listing.get("data", []) if isinstance(m, dict) and m.get("id") == model]
    entry = found[0] if found else {}
    return f"{model}|{entry.get('root')}|{entry.get('max_model_len')}"
