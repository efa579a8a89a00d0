"""Exact prompt-token counts, the way vLLM counts them.

Chat rows are rendered with the model's own chat template (``add_generation_prompt``) and
the text tokenized without adding special tokens again; completions prompts are tokenized
with the tokenizer's special tokens, as vLLM does by default. :class:`LocalTokenCounter`
does it with the model's tokenizer, in batches; :class:`RemoteTokenCounter` asks the
server's ``/tokenize`` when only the server knows the model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import orjson

from vbatch.errors import ConfigError, RequestError
from vbatch.prepare.fit import fits
from vbatch.transport.client import HTTPClient

CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "n_positions", "seq_length",
                "max_seq_len")


def prompt_of(content: dict[str, Any]) -> Any:
    """The text of a content that is not messages: a completions ``prompt`` or a pooling
    ``input``."""
    return content.get("prompt", content.get("input"))


class TokenCounter(Protocol):
    """Counts the prompt tokens of a batch of request contents (``messages`` or ``prompt``)."""

    def count(self, contents: list[dict[str, Any]]) -> list[int]: ...


class LocalTokenCounter:
    """Counts with the model's own tokenizer (a model directory or a hub name)."""

    def __init__(self, model: str):
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise ConfigError(
                "counting tokens locally needs transformers: pip install 'vbatch[cpu]'"
            ) from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load the tokenizer of {model}: {exc}\nHint: the model path or name "
                "looks wrong: give a local model directory or a hub name"
            ) from None

    def count(self, contents: list[dict[str, Any]]) -> list[int]:
        chats = [i for i, c in enumerate(contents) if "messages" in c]
        counts = [0] * len(contents)
        if chats:
            texts = [
                self.tokenizer.apply_chat_template(
                    contents[i]["messages"], add_generation_prompt=True, tokenize=False
                )
                for i in chats
            ]
            encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            for i, ids in zip(chats, encoded, strict=True):
                counts[i] = len(ids)
        prompts = [i for i, c in enumerate(contents) if "messages" not in c]
        if prompts:
            encoded = self.tokenizer([prompt_of(contents[i]) for i in prompts])["input_ids"]
            for i, ids in zip(prompts, encoded, strict=True):
                counts[i] = len(ids)
        return counts


# Chat templates add a few tokens per message and some a default system prompt; no known
# template adds more than this.
TEMPLATE_ALLOWANCE = 512
PER_MESSAGE_ALLOWANCE = 16


def token_bound(content: dict[str, Any]) -> int | None:
    """An upper bound on a content's prompt tokens, or None when there is none to give.

    Byte-level tokenizers give at most one token per UTF-8 byte (SentencePiece at most one
    more per word, which a byte already is); the allowances cover the chat template.
    """
    if "messages" not in content:
        prompt = prompt_of(content)
        return len(prompt.encode()) + PER_MESSAGE_ALLOWANCE if isinstance(prompt, str) else None
    total = TEMPLATE_ALLOWANCE
    for message in content["messages"]:
        text = message.get("content")
        if isinstance(text, list):
            if any(isinstance(p, dict) and p.get("type", "text") != "text" for p in text):
                return None
            text = "".join(str(p.get("text", "")) for p in text if isinstance(p, dict))
        if text is not None and not isinstance(text, str):
            return None
        total += len((text or "").encode()) + PER_MESSAGE_ALLOWANCE
    return total


class BoundedTokenCounter:
    """Counts exactly only the rows that need it, for fitting rows to a known context.

    A row whose byte length proves it fits (:func:`token_bound` + max_tokens within the
    context, as ``fits`` says, given the content's own ``max_tokens``, a batch line's) keeps
    its bound as its count: that leads to the same decision and saves a ``/tokenize`` request
    per row, or loading a tokenizer at all (seconds, and transformers imports torch). ``exact``
    makes the exact counter the first time a row needs one.
    """

    def __init__(self, exact: Callable[[], TokenCounter],
                 fits: Callable[[int, int | None], bool]):
        self._make_exact = exact
        self._exact: TokenCounter | None = None
        self.fits = fits

    def count(self, contents: list[dict[str, Any]]) -> list[int]:
        bounds = [token_bound(content) for content in contents]
        known = [b is not None and self.fits(b, content.get("max_tokens"))
                 for b, content in zip(bounds, contents, strict=True)]
        unknown = [c for c, ok in zip(contents, known, strict=True) if not ok]
        if not unknown:
            return [int(b or 0) for b in bounds]
        if self._exact is None:
            self._exact = self._make_exact()
        exact = iter(self._exact.count(unknown))
        return [int(b or 0) if ok else next(exact) for b, ok in zip(bounds, known, strict=True)]


class RemoteTokenCounter:
    """Counts with the server's ``/tokenize``, from a worker thread, on the client's loop."""

    def __init__(
        self,
        client: HTTPClient,
        model: str,
        loop: asyncio.AbstractEventLoop,
        concurrency: int = 64,
    ):
        self.client = client
        self.model = model
        self.loop = loop
        self.concurrency = concurrency

    def count(self, contents: list[dict[str, Any]]) -> list[int]:
        future = asyncio.run_coroutine_threadsafe(self.count_async(contents), self.loop)
        return future.result()

    async def count_async(self, contents: list[dict[str, Any]]) -> list[int]:
        """Count on the client's own loop."""
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(content: dict[str, Any]) -> int:
            body: dict[str, Any] = {"model": self.model}
            if "messages" in content:
                body.update(messages=content["messages"], add_generation_prompt=True)
            else:
                body["prompt"] = prompt_of(content)
            async with semaphore:
                answer = await self.client.post_json("/tokenize", orjson.dumps(body))
            count = answer.get("count")
            if not isinstance(count, int):
                raise RequestError("/tokenize answered without a count")
            return count

        return list(await asyncio.gather(*(one(c) for c in contents)))


def model_context_limit(model: str) -> int | None:
    """The model's own context length, from its ``config.json`` (and, for a
    sentence-transformers folder, the shorter ``max_seq_length`` vLLM takes from it)."""
    found = _config_context(model)
    bert = Path(model) / "sentence_bert_config.json"
    if bert.exists():
        longest = json.loads(bert.read_text()).get("max_seq_length")
        if isinstance(longest, int) and longest > 0:
            return min(found, longest) if found else longest
    return found


def _config_context(model: str) -> int | None:
    path = Path(model) / "config.json"
    config: dict[str, Any]
    if path.exists():
        config = json.loads(path.read_text())
    else:
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(model).to_dict()
        except Exception:  # no config reachable: the server will tell
            return None
    for source in (config, config.get("text_config") or {}):
        for key in CONTEXT_KEYS:
            value = source.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return None


def fitting_counter(tokenizer: str, max_tokens: int | None, context: int | None) -> TokenCounter:
    """The counter that fits rows to ``context`` (exact counts throughout when it is not known
    yet: the context is then sized from them); the tokenizer loads only when needed."""
    if context is None:
        return LocalTokenCounter(tokenizer)
    known = context
    return BoundedTokenCounter(lambda: LocalTokenCounter(tokenizer),
                               lambda tokens, asked: fits(tokens, asked or max_tokens, known))


async def server_counter(client: HTTPClient, model: str, max_tokens: int | None, context: int,
                         say: Callable[[str], None]) -> TokenCounter | None:
    """The server's ``/tokenize``, bounded by ``context``; None (said) when it cannot count."""
    counter = RemoteTokenCounter(client, model, asyncio.get_running_loop())
    try:
        await counter.count_async([{"prompt": "hello"}])
    except RequestError as exc:
        say(f"cannot count tokens with {client.base}/tokenize ({exc}); rows are not fitted "
            "to the context before sending (give --tokenizer to count them here)")
        return None
    return BoundedTokenCounter(lambda: counter,
                               lambda tokens, asked: fits(tokens, asked or max_tokens, context))
