"""The context a managed CPU server can start with before the rows are counted, so that the
server starts (tens of seconds) while the check pass counts every prompt, instead of after it.

That context is the model's own, when the server's KV cache space (``VLLM_CPU_KVCACHE_SPACE``)
holds a sequence of it :data:`KV_SAFETY` times over: vLLM refuses to start when one sequence of
``--max-model-len`` tokens does not fit its KV cache, and a longer context costs an idle
server nothing more (blocks are taken as sequences grow). Rows are then fitted to the model's
own context, which is what a context sized from the data is capped at. When the model's
layout is unknown (no local ``config.json``), the KV space is not the CPU's, or it is too
small, there is no such context: the server starts after the count, sized from the data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vbatch.prepare.tokens import model_context_limit
from vbatch.servers.options import ServerOptions, dtype_choice

__all__ = ["KV_SAFETY", "kv_bytes_per_token", "start_context"]

# How many sequences of the whole context the KV cache space must hold.
KV_SAFETY = 4
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4}


def kv_bytes_per_token(config: dict[str, Any], dtype_bytes: int) -> int | None:
    """Bytes of KV cache one token takes in a model of ``config`` (its ``config.json``),
    None when it does not say (no layers, heads or hidden size)."""
    config = config.get("text_config") or config
    layers = config.get("num_hidden_layers")
    heads = config.get("num_attention_heads")
    hidden = config.get("hidden_size")
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim")
    if head_dim is None and isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        head_dim = hidden // heads
    sizes = [v for v in (layers, kv_heads, head_dim) if isinstance(v, int) and v > 0]
    if len(sizes) != 3:
        return None
    return 2 * dtype_bytes * sizes[0] * sizes[1] * sizes[2]


def _dtype(options: ServerOptions) -> str:
    """The dtype the server is given (by the user after ``--``, else by vbatch), or ""."""
    extra = list(options.extra_args)
    for position, arg in enumerate(extra):
        if arg.startswith("--dtype="):
            return arg.split("=", 1)[1]
        if arg == "--dtype" and position + 1 < len(extra):
            return extra[position + 1]
    choice = dtype_choice(options)
    return choice.dtype if choice is not None else ""


def start_context(options: ServerOptions, env: Mapping[str, str]) -> int | None:
    """The ``--max-model-len`` to start ``options``' server with before the count (its
    environment ``env``), or None (see the module's doc)."""
    config_path = Path(options.model) / "config.json"
    space = env.get("VLLM_CPU_KVCACHE_SPACE")
    if options.resolved_build != "cpu" or not config_path.is_file() or not space:
        return None
    try:
        config = json.loads(config_path.read_text())
        space_bytes = float(space) * (1 << 30)
    except (OSError, ValueError):
        return None
    per_token = kv_bytes_per_token(config, _DTYPE_BYTES.get(_dtype(options), 4))
    context = model_context_limit(options.model)
    if per_token is None or context is None:
        return None
    return context if KV_SAFETY * context * per_token <= space_bytes else None
