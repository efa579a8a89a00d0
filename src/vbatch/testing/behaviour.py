"""What the simulated vLLM server does, without HTTP: shared by the simulator process
(:mod:`vbatch.testing.simulator`) and the in-process transport (:mod:`vbatch.testing.fake`).

It answers chat and completions requests like vLLM does, with made-up text, and lets a test
choose its latency, its capacity (requests beyond it wait, as in vLLM's queue) and its
faults: a burst of errors, random errors, dropped connections, slow answers, 400 for chosen
prompts, context errors in the words of several vLLM versions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from vbatch.testing.pooling import PoolingRefusal, pooling_answer
from vbatch.testing.refusals import context_refusal, error_body
from vbatch.testing.structured import asked_shape, check_grammar, shaped_text

__all__ = ["Answer", "SimConfig", "SimCounters", "SimulatedServer", "count_tokens",
           "prompt_text"]


@dataclass
class SimConfig:
    """How the simulator behaves; every field can be changed at run time via ``/sim/config``."""

    model: str = "sim-model"
    max_model_len: int = 2048
    latency: float = 0.0
    token_latency: float = 0.0
    capacity: int = 0
    completion_tokens: int = 16
    fail_first: int = 0
    fail_status: int = 503
    error_rate: float = 0.0
    retry_after: float | None = None
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_latency: float = 5.0
    reject_marker: str = "SIM_REJECT"
    api_key: str | None = field(default=None, repr=False)
    seed: int = 0
    keep_requests: int = 1000
    tokenize_scale: float = 1.0
    metrics: bool = True
    context_error_style: str = "vllm-0.32"
    # "content": chat answers in content; "reasoning_tools": content null, with reasoning,
    # tool calls and detailed usage (a reasoning model calling a tool); "empty": content "".
    answer_style: str = "content"
    # What GET /version says (it decides which structured-output fields are read), and the
    # share of structured answers that are not of the shape asked.
    version: str = "0.32.0"
    invalid_rate: float = 0.0


@dataclass
class SimCounters:
    """What the simulator has seen since start or the last ``/sim/reset``."""

    requests_seen: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    running: int = 0
    waiting: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    tokenize_requests: int = 0
    in_flight_s: float = 0.0  # in flight x seconds: / (last change - first arrival) = mean
    first_arrival_t: float | None = None
    last_change_t: float | None = None

    def change_in_flight(self, by: int, now: float) -> None:
        """A request arrived (``by`` 1) or was answered (-1) at ``now``."""
        self.first_arrival_t = now if self.first_arrival_t is None else self.first_arrival_t
        self.in_flight_s += self.in_flight * (now - (self.last_change_t or now))
        self.last_change_t = now
        self.in_flight += by
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def prompt_text(body: dict[str, Any]) -> str:
    """The text a request asks about: its prompt, or its messages joined."""
    if "messages" in body:
        return "\n".join(
            f"{m.get('role')}: {_content_text(m.get('content'))}" for m in body["messages"]
        )
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))


def generate(prompt: str, choice: int, max_tokens: int, body: dict[str, Any]) -> tuple[str, str]:
    """Deterministic text for a prompt (unless sampling without a seed) and its finish reason."""
    key = f"{prompt}|{choice}|{body.get('seed')}"
    if body.get("temperature", 1.0) and body.get("seed") is None:
        key += f"|{random.random()}"
    digest = hashlib.blake2b(key.encode(), digest_size=32).digest()
    words = [f"w{digest[i % 32] + i}" for i in range(max_tokens)]
    text = " ".join(words)
    for stop in body.get("stop") or []:
        cut = text.find(stop)
        if cut != -1:
            return text[:cut], "stop"
    return text, "length"


@dataclass(frozen=True)
class Answer:
    """What the server answers: a status and a JSON body (or text), or a dropped connection."""

    status: int
    body: Any = None
    headers: dict[str, str] | None = None
    dropped: bool = False

    def encoded(self) -> bytes:
        """The body as bytes: JSON, or text as it is."""
        if isinstance(self.body, str):
            return self.body.encode()
        return orjson.dumps(self.body) if self.body is not None else b""


class SimulatedServer:
    """The simulated server's state and answers; every method is one route."""

    def __init__(self, config: SimConfig):
        self.config = config
        self.counters = SimCounters()
        self.requests: deque[dict[str, Any]] = deque(maxlen=config.keep_requests)
        self._rng = random.Random(config.seed)
        self._slots: asyncio.Semaphore | None = None
        self._slot_capacity = 0
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    def _slots_for_capacity(self) -> asyncio.Semaphore | None:
        capacity = self.config.capacity
        if capacity <= 0:
            return None
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slot_capacity != capacity or self._slots_loop is not loop:
            self._slots = asyncio.Semaphore(capacity)
            self._slot_capacity = capacity
            self._slots_loop = loop
        return self._slots

    def _error(self, status: int, message: str, kind: str = "BadRequestError") -> Answer:
        self.counters.statuses[str(status)] = self.counters.statuses.get(str(status), 0) + 1
        headers = None
        if status in (429, 503) and self.config.retry_after is not None:
            headers = {"Retry-After": f"{self.config.retry_after:g}"}
        return Answer(status, error_body(message, code=status, kind=kind), headers)

    def authorized(self, authorization: str | None) -> bool:
        """Whether a request with this ``Authorization`` header may be served."""
        key = self.config.api_key
        return key is None or authorization == f"Bearer {key}"

    async def complete(self, raw: bytes, authorization: str | None, chat: bool) -> Answer:
        """``POST /v1/chat/completions`` (``chat``) or ``/v1/completions``."""
        counters = self.counters
        counters.requests_seen += 1
        seen = counters.requests_seen
        counters.change_in_flight(1, time.monotonic())
        try:
            return await self._answer(raw, authorization, chat, seen)
        finally:
            counters.change_in_flight(-1, time.monotonic())

    async def _answer(self, raw: bytes, authorization: str | None, chat: bool,
                      seen: int) -> Answer:
        config = self.config
        if not self.authorized(authorization):
            return self._error(401, "invalid API key", "AuthenticationError")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._error(400, "malformed JSON", "Bad Request")
        self.requests.append(body)
        if seen <= config.fail_first or self._rng.random() < config.error_rate:
            return self._error(config.fail_status, "simulated overload", "ServiceUnavailable")
        if self._rng.random() < config.drop_rate:
            self.counters.dropped += 1
            return Answer(500, dropped=True)
        prompt = prompt_text(body)
        if config.reject_marker and config.reject_marker in prompt:
            return self._error(400, "simulated rejection of this prompt")
        if body.get("model") not in (None, config.model):
            return self._error(
                404, f"The model `{body.get('model')}` does not exist.", "NotFoundError"
            )
        shape = asked_shape(body, config.version)
        if shape is not None and shape[0] == "grammar" and check_grammar(str(shape[1])):
            return self._error(400, str(check_grammar(str(shape[1]))))
        prompt_tokens = count_tokens(prompt)
        max_tokens = body.get("max_tokens") or (config.completion_tokens if chat else 16)
        refusal = context_refusal(config.max_model_len, config.context_error_style,
                                  prompt_tokens, max_tokens)
        if refusal is not None:
            return Answer(400, refusal)
        natural = min(max_tokens, config.completion_tokens)
        n_tokens = min(natural, config.max_model_len - prompt_tokens)
        delay = config.latency + n_tokens * config.token_latency
        if self._rng.random() < config.slow_rate:
            delay += config.slow_latency
        await self._occupy(delay)
        cut = n_tokens < natural
        return Answer(200, self._response(body, chat, prompt, prompt_tokens, n_tokens,
                                          max_tokens, cut, shape))
    async def _occupy(self, delay: float) -> None:
        slots = self._slots_for_capacity()
        counters = self.counters
        if slots is None:
            counters.running += 1
            try:
                await asyncio.sleep(delay)
            finally:
                counters.running -= 1
            return
        counters.waiting += 1
        try:
            await slots.acquire()
        finally:
            counters.waiting -= 1
        counters.running += 1
        try:
            await asyncio.sleep(delay)
        finally:
            counters.running -= 1
            slots.release()

    def _response(
        self,
        body: dict[str, Any],
        chat: bool,
        prompt: str,
        prompt_tokens: int,
        n_tokens: int,
        max_tokens: int,
        cut_by_context: bool,
        shape: tuple[str, Any] | None = None,
    ) -> dict[str, Any]:
        choices = []
        completion_tokens = 0
        for i in range(int(body.get("n", 1))):
            if shape is not None:
                text, reason = self._shaped(shape, f"{prompt}|{i}|{body.get('seed')}",
                                            max_tokens)
            else:
                text, reason = generate(prompt, i, n_tokens, body)
                if reason == "length" and n_tokens < max_tokens and not cut_by_context:
                    reason = "stop"
            completion_tokens += count_tokens(text) if shape is None else -(-len(text) // 4)
            choice: dict[str, Any] = {"index": i, "finish_reason": reason, "logprobs": None}
            if chat:
                choice["message"] = self._message(text, i)
            else:
                choice["text"] = text
            if body.get("logprobs"):
                choice["logprobs"] = {"content": [{"token": w, "logprob": -1.0}
                                                  for w in text.split()]}
            choices.append(choice)
        self.counters.prompt_tokens += prompt_tokens
        self.counters.generation_tokens += completion_tokens
        self.counters.statuses["200"] = self.counters.statuses.get("200", 0) + 1
        return {
            "id": f"sim-{self.counters.requests_seen}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.config.model,
            "choices": choices,
            "usage": self._usage(prompt_tokens, completion_tokens),
        }

    def _shaped(self, shape: tuple[str, Any], key: str, max_tokens: int) -> tuple[str, str]:
        """A structured answer, cut (finish reason ``length``) past ``max_tokens`` tokens of
        four characters each."""
        text = shaped_text(shape[0], shape[1], key, self.config.invalid_rate)
        if len(text) > 4 * max_tokens:
            return text[:4 * max_tokens], "length"
        return text, "stop"

    def _message(self, text: str, index: int) -> dict[str, Any]:
        style = self.config.answer_style
        if style == "empty":
            return {"role": "assistant", "content": ""}
        if style != "reasoning_tools":
            return {"role": "assistant", "content": text}
        call = {"id": f"call_{index}", "type": "function",
                "function": {"name": "lookup", "arguments": json.dumps({"query": text[:20]})}}
        return {"role": "assistant", "content": None,
                "reasoning_content": f"I should look up {text}", "tool_calls": [call]}

    def _usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        usage: dict[str, Any] = {"prompt_tokens": prompt_tokens,
                                 "completion_tokens": completion_tokens,
                                 "total_tokens": prompt_tokens + completion_tokens}
        if self.config.answer_style == "reasoning_tools":
            usage["prompt_tokens_details"] = {"cached_tokens": prompt_tokens // 2}
            usage["completion_tokens_details"] = {"reasoning_tokens": completion_tokens // 2}
        return usage

    def pool(self, path: str, raw: bytes, authorization: str | None) -> Answer:
        """A pooling model's route (``/v1/embeddings``, ``/score``, ``/rerank``,
        ``/classify``; see :mod:`vbatch.testing.pooling`)."""
        self.counters.requests_seen += 1
        if not self.authorized(authorization):
            return self._error(401, "invalid API key", "AuthenticationError")
        body = orjson.loads(raw)
        self.requests.append(body)
        if body.get("model") not in (None, self.config.model):
            return self._error(
                404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        marker = self.config.reject_marker
        if marker and marker in orjson.dumps(body.get("input")).decode():
            return self._error(400, f"an input holds {marker}")
        try:
            answer = pooling_answer(path, body)
        except PoolingRefusal as exc:
            return self._error(400, str(exc))
        self.counters.statuses["200"] = self.counters.statuses.get("200", 0) + 1
        return Answer(200, {**answer, "model": self.config.model})

    def version(self) -> Answer:
        """``GET /version``, as vLLM answers it."""
        return Answer(200, {"version": self.config.version})

    def models(self, authorization: str | None) -> Answer:
        """``GET /v1/models``: vLLM guards every /v1 route with its key."""
        if not self.authorized(authorization):
            return self._error(401, "invalid API key", "AuthenticationError")
        model = {"id": self.config.model, "object": "model", "owned_by": "vbatch-simulator",
                 "max_model_len": self.config.max_model_len}
        return Answer(200, {"object": "list", "data": [model]})

    def tokenize(self, raw: bytes) -> Answer:
        """``POST /tokenize``: one token per word, times ``tokenize_scale``."""
        self.counters.tokenize_requests += 1
        count = int(len(prompt_text(orjson.loads(raw)).split()) * self.config.tokenize_scale)
        return Answer(200, {"count": count, "max_model_len": self.config.max_model_len,
                            "tokens": list(range(count))})

    def metrics(self) -> Answer:
        """``GET /metrics``: vLLM's request gauges and token counters."""
        if not self.config.metrics:
            return Answer(404, "Not Found")
        c = self.counters
        model = self.config.model
        capacity = self.config.capacity or max(1, c.running)
        lines = [
            f'vllm:num_requests_running{{model_name="{model}"}} {c.running}',
            f'vllm:num_requests_waiting{{model_name="{model}"}} {c.waiting}',
            f'vllm:kv_cache_usage_perc{{model_name="{model}"}} '
            f"{min(1.0, c.running / capacity):.4f}",
            f'vllm:num_preemptions_total{{model_name="{model}"}} 0',
            f'vllm:prompt_tokens_total{{model_name="{model}"}} {c.prompt_tokens}',
            f'vllm:generation_tokens_total{{model_name="{model}"}} {c.generation_tokens}',
        ]
        return Answer(200, "\n".join(lines) + "\n")

    def stats(self) -> dict[str, Any]:
        """The counters."""
        return dataclasses.asdict(self.counters)

    def reset(self) -> None:
        """Zero the counters and forget the requests seen."""
        self.counters = SimCounters()
        self.requests.clear()

    def configure(self, changes: dict[str, Any]) -> Answer:
        """Change settings of :class:`SimConfig` while running."""
        known = {f.name for f in dataclasses.fields(SimConfig)}
        unknown = set(changes) - known
        if unknown:
            return self._error(400, f"unknown simulator settings: {sorted(unknown)}")
        self.config = dataclasses.replace(self.config, **changes)
        return Answer(200, {k: v for k, v in dataclasses.asdict(self.config).items()
                            if k != "api_key"})
