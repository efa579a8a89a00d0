"""The request of one call of a program: the run's options as defaults, the call's own on top
(``model``, ``max_tokens``, ``temperature``, ``top_p``, ``n``, ``seed``, ``stop``, ``system``,
``extra_body`` and the structured-output options ``response_format``, ``json_schema``,
``choice``, ``regex``), for the API the call names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from vbatch.endpoints import ENDPOINTS, EndpointKind
from vbatch.settings import RequestSettings
from vbatch.structured.parse import spec_of_value
from vbatch.structured.specs import FORM_STRUCTURED, Choice, OutputSpec, Regex

__all__ = ["CALL_OPTIONS", "CallBuilder", "CallRequest"]

CALL_OPTIONS = ("model", "max_tokens", "temperature", "top_p", "n", "seed", "stop", "system",
                "extra_body", "response_format", "json_schema", "choice", "regex")
# A rollout's calls that give no seed get one of their own: rollout r, call k.
_ROLLOUT_SEED = 1_000_003


@dataclass(frozen=True)
class CallRequest:
    """One call, ready to send: its route, body, answer's kind and spec, completions asked."""

    route: str
    body: bytes
    kind: EndpointKind
    spec: OutputSpec | None
    n: int
    max_tokens: int | None


class CallBuilder:
    """Builds the requests of a run's program calls (``model``: the run's; ``form``: the
    structured-output form its server takes, set once it is known)."""

    def __init__(self, requests: RequestSettings, model: str | None, rollouts: int):
        self.requests = requests
        self.model = model
        self.rollouts = rollouts
        self.form = ""

    def build(self, kind_name: str, content: dict[str, Any], options: dict[str, Any],
              rollout: int) -> CallRequest:
        """The request of a call of ``kind_name`` (``chat``, ``completions``, ``embeddings``,
        ``score``, ``rerank``) with ``content`` and the call's ``options``; raises TypeError
        for an option calls do not take, ValueError for a bad one."""
        unknown = sorted(set(options) - set(CALL_OPTIONS))
        if unknown:
            raise TypeError(f"llm calls take no option {unknown[0]!r} (they take "
                            f"{', '.join(CALL_OPTIONS)})")
        requests = self.requests
        kind = ENDPOINTS[kind_name].configured(requests.embedding_dtype)
        body: dict[str, Any] = dict(kind.body_fields())
        model = options.get("model", self.model)
        if model:
            body["model"] = model
        if kind.takes_messages and "messages" not in content:
            system = options.get("system", requests.system)
            content = kind.prompt_content(content["prompt"], system)
        body.update(content)
        spec = None
        if not kind.pooling:
            sampling = {name: options.get(name, getattr(requests, name))
                        for name in ("max_tokens", "temperature", "top_p", "seed")}
            if sampling["seed"] is None and self.rollouts > 1:
                sampling["seed"] = rollout
            elif sampling["seed"] is not None and rollout:
                sampling["seed"] += rollout * _ROLLOUT_SEED
            body.update({k: v for k, v in sampling.items() if v is not None})
            stop = options.get("stop", requests.stop)
            if stop:
                body["stop"] = [stop] if isinstance(stop, str) else list(stop)
            n = int(options.get("n", requests.n))
            if n != 1:
                body["n"] = n
            spec = _call_spec(options, requests.response_format)
            if spec is not None:
                body.update(spec.request_fields(kind.takes_messages,
                                                self.form or FORM_STRUCTURED))
        body.update(requests.extra_body or {})
        body.update(options.get("extra_body") or {})
        max_tokens = body.get("max_tokens")
        return CallRequest(kind.route, orjson.dumps(body), kind, spec,
                           int(options.get("n", requests.n)) if not kind.pooling else 1,
                           max_tokens if isinstance(max_tokens, int) else None)


def _call_spec(options: dict[str, Any], default: OutputSpec | None) -> OutputSpec | None:
    given = [name for name in ("response_format", "json_schema", "choice", "regex")
             if options.get(name) is not None]
    if len(given) > 1:
        raise ValueError(f"a call takes one of response_format, json_schema, choice, regex, "
                         f"not {given[0]} and {given[1]}")
    if not given:
        return default
    value = options[given[0]]
    if given[0] == "choice":
        return Choice(value)
    if given[0] == "regex":
        return Regex(value)
    return spec_of_value(value, given[0])
