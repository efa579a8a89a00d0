"""The option groups of the ``vbatch`` commands, shared between them (as sqlite-utils'
``output_options``): how rows become requests, the managed server, and everything ``run``
and ``run-batch`` take."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import orjson

from vbatch.cli_answers import program_options, reuse_options, structured_options
from vbatch.cli_group import decorated
from vbatch.config import parse_concurrency
from vbatch.defaults import (
    DEFAULT_BATCH_LIMITS,
    DEFAULT_CONCURRENCY,
    DEFAULT_EMBEDDING_DTYPE,
    DEFAULT_ENDPOINT,
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_GROUP_BY_PREFIX,
    DEFAULT_ID_FIELD,
    DEFAULT_INPUTS_PER_REQUEST,
    DEFAULT_LOG_EVERY,
    DEFAULT_LOG_FORMAT,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_DOWNTIME,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_N,
    DEFAULT_ON_BAD_ROW,
    DEFAULT_ON_OVERFLOW,
    DEFAULT_PREFIX_ROUTING,
    DEFAULT_PROMPT_FIELD,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RETRY_BASE_DELAY,
    DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_STARTUP_TIMEOUT,
    DEFAULT_TENSOR_PARALLEL_SIZE,
    GROUP_BY_PREFIX_CHOICES,
    INPUT_FORMATS,
    LOG_FORMATS,
    ON_BAD_ROW_POLICIES,
    ON_OVERFLOW_POLICIES,
)
from vbatch.endpoints import EMBEDDING_DTYPES, ENDPOINTS
from vbatch.errors import ConfigError

__all__ = ["managed_server_options", "row_options", "run_options"]


def _parse_concurrency(ctx: click.Context, param: click.Parameter, value: str) -> int | str:
    try:
        return parse_concurrency(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _batch_limit(which: int) -> str:
    """The managed server's default batch limit ``which`` (0: sequences, 1: tokens) per build."""
    return ", ".join(f"{limits[which]} {build.upper()}"
                     for build, limits in DEFAULT_BATCH_LIMITS.items())


def _parse_extra_body(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        text = Path(value[1:]).read_text() if value.startswith("@") else value
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value[1:]}: {exc.strerror}") from None
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"top_k\": 20}'")
    return parsed


def managed_server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a managed vLLM server, shared by ``run`` and ``serve``."""
    decorators = [
        click.option(
            "--max-model-len",
            type=int,
            help="Context length of the managed server (default: on the CPU the model's own "
            "when the KV cache space holds it, so the server starts while the rows are "
            "counted; else sized from the data, the longest prompt + max_tokens rounded up, "
            "at most the model's own).",
        ),
        click.option(
            "--gpu-memory-utilization",
            type=float,
            default=DEFAULT_GPU_MEMORY_UTILIZATION,
            show_default=True,
            help="Share of GPU memory the managed server may use.",
        ),
        click.option(
            "--tensor-parallel-size",
            type=int,
            default=DEFAULT_TENSOR_PARALLEL_SIZE,
            show_default=True,
            help="GPUs per managed server.",
        ),
        click.option(
            "--max-num-seqs",
            type=int,
            help=f"Managed server's batch size limit (default: {_batch_limit(0)}).",
        ),
        click.option(
            "--max-num-batched-tokens",
            type=int,
            help=f"Managed server's tokens per step (default: {_batch_limit(1)}).",
        ),
        click.option(
            "--max-restarts",
            type=int,
            default=DEFAULT_MAX_RESTARTS,
            show_default=True,
            help="Restarts of a managed server that dies.",
        ),
        click.option(
            "--startup-timeout",
            type=float,
            default=DEFAULT_STARTUP_TIMEOUT,
            show_default=True,
            help="Seconds the managed server may take to become healthy.",
        ),
    ]
    return decorated(command, decorators)


def row_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """How rows become requests, shared by ``run`` and ``plan``: the API, the row's id and
    prompt fields, the template, the input format and what a bad row does."""
    decorators = [
        click.option(
            "--endpoint",
            type=click.Choice(list(ENDPOINTS)),
            default=DEFAULT_ENDPOINT,
            show_default=True,
            help="Which API the rows go to: chat, completions, or a pooling model's "
            "embeddings, score (rows with text_1 and text_2, or query and documents), rerank "
            "(query and documents) or classify. plan counts chat or completions rows.",
        ),
        click.option(
            "--id-field",
            default=DEFAULT_ID_FIELD,
            show_default=True,
            help="Input field with the row's id (else the row's 0-based index).",
        ),
        click.option(
            "--prompt-field",
            default=DEFAULT_PROMPT_FIELD,
            show_default=True,
            help="Input field with the prompt; a row with a 'messages' list is sent as chat.",
        ),
        click.option("--system", help="System message put before each chat prompt."),
        click.option(
            "--template",
            help="Jinja2 template building the prompt from the row's "
            "fields, e.g. 'Summarise: {{ text }}'.",
        ),
        click.option(
            "--input-format",
            type=click.Choice(INPUT_FORMATS),
            help="Input format (default: from the file name).",
        ),
        click.option(
            "--on-bad-row",
            type=click.Choice(ON_BAD_ROW_POLICIES),
            default=DEFAULT_ON_BAD_ROW,
            show_default=True,
            help="fail: stop before sending anything; skip: record the row as failed "
            "(plan: leave it out of the counts).",
        ),
    ]
    return decorated(command, decorators)


def run_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Every option of ``vbatch run`` but its input and output: shared by ``run-batch``."""
    decorators: list[Callable[..., Any]] = [
        click.option(
            "--base-url",
            envvar="VBATCH_BASE_URL",
            multiple=True,
            help="The server's OpenAI API, e.g. http://127.0.0.1:8000/v1 (env VBATCH_BASE_URL); "
            "repeat it to balance over several servers.",
        ),
        click.option(
            "--endpoints",
            "endpoints_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="File of servers to balance over: one 'URL [WEIGHT]' per line.",
        ),
        click.option(
            "--model", help="Model name sent in requests (default: the one the server serves)."
        ),
        click.option(
            "--api-key",
            help="API key (default: env VBATCH_API_KEY or OPENAI_API_KEY; "
            "prefer them: a command line is visible to every user in ps). "
            "Never logged or written.",
        ),
        row_options,
        click.option("--max-tokens", type=int, help="Most tokens to generate per row."),
        click.option("--temperature", type=float, help="Sampling temperature."),
        click.option("--top-p", type=float, help="Nucleus sampling probability mass."),
        click.option("--seed", type=int, help="Sampling seed, for reproducible outputs."),
        click.option("--stop", multiple=True, help="Stop sequence (repeatable)."),
        click.option(
            "--inputs-per-request",
            type=int,
            default=DEFAULT_INPUTS_PER_REQUEST,
            show_default=True,
            help="Rows sent together in one request to a pooling endpoint that takes a list "
            "(embeddings, classify); each still gets its own record. 1: one request per row.",
        ),
        click.option(
            "--embedding-dtype",
            type=click.Choice(list(EMBEDDING_DTYPES)),
            default=DEFAULT_EMBEDDING_DTYPE,
            show_default=True,
            help="Precision the server sends embeddings in (base64-encoded; float16 halves "
            "the bytes, vLLM only).",
        ),
        click.option(
            "--n", type=int, default=DEFAULT_N, show_default=True, help="Completions per row."
        ),
        click.option(
            "--concurrency",
            default=DEFAULT_CONCURRENCY,
            show_default=True,
            callback=_parse_concurrency,
            help="Requests in flight: 'auto' follows the server's load (vLLM /metrics), "
            "a number fixes it.",
        ),
        click.option(
            "--max-concurrency",
            type=int,
            default=DEFAULT_MAX_CONCURRENCY,
            show_default=True,
            help="Ceiling of --concurrency auto.",
        ),
        click.option(
            "--extra-body",
            callback=_parse_extra_body,
            help="JSON object (or @file) merged into every request, e.g. '{\"top_k\": 20}'.",
        ),
        structured_options,
        program_options,
        reuse_options,
        click.option(
            "--keep", multiple=True, help="Input field copied into the output (repeatable)."
        ),
        click.option(
            "--max-retries",
            type=int,
            default=DEFAULT_MAX_RETRIES,
            show_default=True,
            help="Retries of a row after connection errors, timeouts, 408, 429 and 5xx.",
        ),
        click.option(
            "--retry-delay",
            type=float,
            default=DEFAULT_RETRY_BASE_DELAY,
            show_default=True,
            help="First retry's delay in seconds; doubles each retry, with jitter.",
        ),
        click.option(
            "--request-timeout",
            type=float,
            default=DEFAULT_REQUEST_TIMEOUT,
            show_default=True,
            help="Seconds one request may take.",
        ),
        click.option(
            "--max-downtime",
            type=float,
            default=DEFAULT_MAX_DOWNTIME,
            show_default=True,
            help="Stop (exit 3) when no server has answered for this many seconds; "
            "the rows not recorded are sent by the same command later.",
        ),
        click.option(
            "--shutdown-grace",
            type=float,
            default=DEFAULT_SHUTDOWN_GRACE,
            show_default=True,
            help="Seconds in-flight requests get to finish after Ctrl-C or SIGTERM.",
        ),
        click.option(
            "--ordered", is_flag=True, help="Rewrite the output in input order at the end."
        ),
        click.option(
            "--retry-failed",
            is_flag=True,
            help="On resume, send the rows recorded as failed again and replace their records.",
        ),
        click.option(
            "--force",
            is_flag=True,
            help="Resume even though the generation parameters or rows changed; rows "
            "whose request changed are sent again and their records replaced.",
        ),
        click.option(
            "--on-overflow",
            type=click.Choice(ON_OVERFLOW_POLICIES),
            default=DEFAULT_ON_OVERFLOW,
            show_default=True,
            help="A row whose prompt + max_tokens exceeds the context: clamp its max_tokens, "
            "skip it (recorded as failed), or fail before sending anything.",
        ),
        click.option(
            "--tokenizer",
            help="Model directory or hub name whose tokenizer counts prompt tokens here "
            "(default: the server's /tokenize, or --model when it is a directory).",
        ),
        click.option(
            "--group-by-prefix",
            type=click.Choice(GROUP_BY_PREFIX_CHOICES),
            default=DEFAULT_GROUP_BY_PREFIX,
            show_default=True,
            is_flag=False,
            flag_value="on",
            help="Send rows whose prompts start alike (same system prompt or few-shot block) "
            "one after another, for vLLM's prefix cache: auto where the check finds rows that "
            "share long prefixes scattered over the input; alone, the same as on.",
        ),
        click.option(
            "--prefix-routing/--no-prefix-routing",
            default=DEFAULT_PREFIX_ROUTING,
            show_default=True,
            help="With several servers, send requests whose prompts share a long start "
            "(512+ characters) to one server, for its prefix cache, unless it is well above "
            "the least loaded one; --no-prefix-routing: always the least loaded.",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No progress and no summary."),
        click.option(
            "--log-every",
            type=float,
            default=DEFAULT_LOG_EVERY,
            show_default=True,
            help="Seconds between progress lines when stderr is not a terminal.",
        ),
        click.option(
            "--log-format",
            type=click.Choice(LOG_FORMATS),
            default=DEFAULT_LOG_FORMAT,
            show_default=True,
            help="Progress lines as text, or as JSON objects (one per line, also on a "
            "terminal) for log collectors.",
        ),
        click.option(
            "--stats-json",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write the end-of-run summary as JSON to this file.",
        ),
        managed_server_options,
        click.option(
            "--replicas",
            type=int,
            help="Managed servers to start and balance over, each on its own GPUs or CPUs "
            "(default 1; with --ray: one per GPU group of the cluster, or per endpoint).",
        ),
        click.option(
            "--ray",
            "ray_address",
            is_flag=False,
            flag_value="",
            default=None,
            metavar="[ADDRESS]",
            help="Spread the rows over a Ray cluster: one actor per replica, each with its own "
            "server (or the given endpoints). ADDRESS: 'auto', ray://host:10001, or nothing "
            "(RAY_ADDRESS, else a local cluster). Needs vbatch[ray].",
        ),
        click.option(
            "--shard-rows",
            type=int,
            help="Rows per shard handed to a Ray worker (default: about 8 shards per worker).",
        ),
        click.option(
            "--shard-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Where Ray workers write shard outputs; every node must reach it "
            "(default: OUTPUT.shards beside the output).",
        ),
        click.option(
            "--error-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="OpenAI Batch input: write the failed requests' lines here instead "
            "of to the output, as the OpenAI Batch API does.",
        ),
    ]
    return decorated(command, decorators)
