"""Turn an input row into the body of an OpenAI-compatible request.

Chat rows become ``messages`` (a row's own ``messages`` list is sent as it is, with
``--system`` put first when it has no system message of its own); completions rows become
``prompt``. ``--template`` builds the prompt from the row's fields with Jinja2. Sampling
options are added when set and ``--extra-body`` is merged last, so it can set anything.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

import orjson

from vbatch.cache.store import deterministic
from vbatch.endpoints import endpoint_kind
from vbatch.errors import ConfigError, InputError
from vbatch.settings import RequestSettings
from vbatch.source.readers import RawRow
from vbatch.structured.parse import row_spec
from vbatch.structured.specs import FORM_STRUCTURED, OutputSpec

if TYPE_CHECKING:
    import jinja2

_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")
# Where a row's own spec (--schema-field) travels in its request content.
ROW_SPEC = "_output_spec"


def fingerprint_of(body: bytes) -> int:
    """8 bytes of a BLAKE2 hash of a request body, as a signed integer; never 0 (unknown)."""
    value = int.from_bytes(hashlib.blake2b(body, digest_size=8).digest(), "little", signed=True)
    return value or 1


def compile_template(source: str) -> jinja2.Template:
    """A Jinja2 template in which a missing field is an error, not an empty string."""
    # Jinja2 (~10 MB) is loaded only by a run that has a --template.
    import jinja2
    import jinja2.sandbox

    env = jinja2.sandbox.SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(
            f"--template is not valid Jinja2: {exc.message} (line {exc.lineno})"
        ) from None


class RequestBuilder:
    """Builds request bodies for one run's options."""

    countable = True
    # Rows carry their own max_tokens (a batch file's lines), not the run's.
    asks_per_row = False

    def __init__(self, requests: RequestSettings, model: str | None):
        self.requests = requests
        self.model = model
        self.kind = endpoint_kind(requests.endpoint, requests.embedding_dtype)
        self.route = self.kind.route
        self.countable = self.kind.countable
        self._template = compile_template(requests.template) if requests.template else None
        self._base: dict[str, Any] = self.kind.body_fields()
        if model:
            self._base["model"] = model
        sampling = {
            "max_tokens": requests.max_tokens,
            "temperature": requests.temperature,
            "top_p": requests.top_p,
            "seed": requests.seed,
        }
        self._base.update({k: v for k, v in sampling.items() if v is not None})
        if requests.stop:
            self._base["stop"] = list(requests.stop)
        if requests.n != 1:
            self._base["n"] = requests.n
        self._extra = dict(requests.extra_body or {})
        self.spec = requests.response_format
        self.form = FORM_STRUCTURED

    def use_form(self, form: str) -> None:
        """Send specs in ``form``, the one the server takes (see :mod:`vbatch.structured`)."""
        self.form = form

    def spec_of(self, content: dict[str, Any]) -> OutputSpec | None:
        """The shape the answer to ``content`` must have: the row's own, else the run's."""
        spec: OutputSpec | None = content.get(ROW_SPEC, self.spec)
        return spec

    @property
    def structured(self) -> bool:
        """Whether some answers have a shape to check (a run's spec or rows' own)."""
        return self.spec is not None or self.requests.schema_field is not None

    def row_id(self, row: RawRow) -> str:
        """The row's id: its ``--id-field`` value as a string, else its 0-based index."""
        data = row.data
        assert data is not None
        value = data.get(self.requests.id_field)
        if value is None:
            if self.requests.id_field in data:
                raise InputError(row.location, "the id is null", self.requests.id_field)
            return str(row.index)
        if isinstance(value, float):
            raise InputError(
                row.location,
                f"an id must be a string or an integer, got the number {value!r} (a fraction, "
                "or a whole number beyond 64 bits)", self.requests.id_field,
                "write the id as a string, in quotes")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise InputError(
                row.location,
                f"an id must be a string or an integer, got {type(value).__name__}",
                self.requests.id_field,
            )
        text = str(value)
        if not text:
            raise InputError(row.location, "the id is empty", self.requests.id_field)
        return text

    def content(self, row: RawRow) -> dict[str, Any]:
        """``{"messages": [...]}``, ``{"prompt": "..."}`` or what else the endpoint kind makes
        of the row; raises InputError."""
        data = row.data
        assert data is not None
        fields = self.kind.row_content(row.location, data)
        if fields is not None:
            return fields
        content = self._content(row, data)
        field = self.requests.schema_field
        if field is not None and data.get(field) is not None:
            try:
                content[ROW_SPEC] = row_spec(data[field])
            except ValueError as exc:
                raise InputError(row.location, str(exc), field,
                                 "give a JSON Schema object or a list of choices") from None
        return content

    def _content(self, row: RawRow, data: dict[str, Any]) -> dict[str, Any]:
        if self._template is not None:
            prompt = self._render(row, data)
        elif "messages" in data and self.requests.prompt_field not in data:
            if not self.kind.takes_messages:
                raise InputError(
                    row.location,
                    "a messages row needs --endpoint chat",
                    "messages",
                    "or give the row a prompt string",
                )
            return {"messages": self._messages(row, data["messages"])}
        else:
            prompt = self._prompt(row, data)
        return self.kind.prompt_content(prompt, self.requests.system)

    def route_for(self, content: dict[str, Any]) -> str:
        """The route of a row's request: the endpoint kind's."""
        return self.route

    def counted(self, content: dict[str, Any]) -> dict[str, Any] | None:
        """What of a row's content the token counter counts: its messages or prompt."""
        if ROW_SPEC in content:
            return {k: v for k, v in content.items() if k != ROW_SPEC}
        return content

    def deterministic(self, content: dict[str, Any]) -> bool:
        """Whether the request ``content`` makes is answered the same each time (greedy, or
        sampled with a seed), read from the fields its body is merged from."""
        chosen: dict[str, Any] = {}
        for name in ("temperature", "seed"):
            for fields in (self._extra, content, self._base):
                if name in fields:
                    chosen[name] = fields[name]
                    break
        return deterministic(chosen)

    def max_tokens_of(self, content: dict[str, Any]) -> int | None:
        """The ``max_tokens`` a row asks for: the run's."""
        return self.requests.max_tokens

    def request_fingerprint(self, content: dict[str, Any], body: bytes, clamped: bool) -> int:
        """The fingerprint of the request ``content`` makes, given its ``body`` as sent: of the
        request before any clamp, as the check pass made it."""
        if clamped or self.spec_of(content) is not None:
            return self.fingerprint(content)
        return fingerprint_of(body)

    def fingerprint(self, content: dict[str, Any]) -> int:
        """The 8-byte fingerprint of the request a row's content makes (before any clamp); of
        its spec as itself, whatever form the server takes it in."""
        spec = self.spec_of(content)
        if spec is None:
            return fingerprint_of(self.body(content))
        asked = {k: v for k, v in content.items() if k != ROW_SPEC}
        shaped = {**self._base, **asked, "vbatch_output": spec.canonical(), **self._extra}
        return fingerprint_of(orjson.dumps(shaped))

    def body(self, content: dict[str, Any], max_tokens: int | None = None) -> bytes:
        """The JSON request body for a row's content; ``max_tokens`` overrides a clamped row's."""
        spec = self.spec_of(content)
        if spec is None:
            payload = {**self._base, **content, **self._extra}
        else:
            asked = {k: v for k, v in content.items() if k != ROW_SPEC}
            fields = spec.request_fields(self.kind.takes_messages, self.form)
            payload = {**self._base, **asked, **fields, **self._extra}
        if max_tokens is not None and max_tokens != self.requests.max_tokens:
            payload["max_tokens"] = max_tokens
        return orjson.dumps(payload)

    def _prompt(self, row: RawRow, data: dict[str, Any]) -> str:
        field = self.requests.prompt_field
        if field not in data:
            raise InputError(
                row.location,
                "missing",
                field,
                "set --prompt-field, --template, or give the row a messages list"
                if self.kind.takes_messages else "set --prompt-field or --template",
            )
        value = data[field]
        if not isinstance(value, str):
            raise InputError(row.location, f"expected a string, got {type(value).__name__}", field)
        return value

    def _messages(self, row: RawRow, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not value:
            raise InputError(row.location, "expected a non-empty list of messages", "messages")
        for position, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InputError(
                    row.location,
                    f"message {position} needs a 'role' string",
                    "messages",
                )
            if "content" not in message:
                raise InputError(row.location, f"message {position} has no 'content'", "messages")
        if self.requests.system is not None and value[0].get("role") != "system":
            return [{"role": "system", "content": self.requests.system}, *value]
        return value

    def _render(self, row: RawRow, data: dict[str, Any]) -> str:
        assert self._template is not None
        import jinja2  # loaded by compile_template

        try:
            return self._template.render({**data, "row": data})
        except jinja2.UndefinedError as exc:
            match = _UNDEFINED_NAME.search(str(exc))
            field = match.group(1) if match else None
            raise InputError(row.location, "missing, needed by --template", field) from None
        except jinja2.TemplateError as exc:
            raise InputError(row.location, f"--template failed: {exc}") from None
        except Exception as exc:  # the template's own arithmetic, filters and calls
            raise InputError(row.location, f"--template failed: {type(exc).__name__}: {exc}",
                             hint="check the expression in --template") from None
