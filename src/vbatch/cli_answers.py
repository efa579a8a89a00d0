"""The option groups of what a job's answers are, shared by ``run`` and ``run-batch``: their
shape (structured outputs), programs (several calls per row), and reuse and budgets (what is
sent again, what is reused, what may be spent)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vbatch.cli_group import decorated
from vbatch.defaults import (
    DEFAULT_CACHE_MAX_SIZE,
    DEFAULT_INVALID_FINISH_REASONS,
    DEFAULT_MAX_INVALID_RETRIES,
)

__all__ = ["program_options", "reuse_options", "structured_options"]


def _parse_reasons(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    return tuple(reason.strip() for reason in value.split(",") if reason.strip())


def structured_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--json-schema``, ``--json``, ``--regex``, ``--choice``, ``--grammar``,
    ``--schema-field``, ``--invalid-finish-reasons`` and ``--max-invalid-retries``."""
    decorators = [
        click.option(
            "--json-schema",
            metavar="FILE|JSON",
            help="Every answer is a JSON value of this JSON Schema (a file, @file or the JSON "
            "itself): sent as structured output, checked, in the record's 'parsed'.",
        ),
        click.option("--json", "json_object", is_flag=True,
                     help="Every answer is a JSON object (any), checked and parsed."),
        click.option("--regex", help="Every answer matches this regular expression, whole."),
        click.option("--choice", multiple=True,
                     help="Every answer is one of these texts (repeat for each choice)."),
        click.option("--grammar", metavar="FILE|TEXT",
                     help="Every answer follows this grammar (EBNF/Lark, as vLLM takes it); the "
                     "server is asked once, before the run, whether it compiles."),
        click.option("--schema-field",
                     help="Input field holding a row's own JSON Schema (or list of choices); a "
                     "row without one takes the run's."),
        click.option(
            "--invalid-finish-reasons",
            default=",".join(DEFAULT_INVALID_FINISH_REASONS),
            show_default=True,
            callback=_parse_reasons,
            help="Comma-separated finish reasons that make a structured answer invalid (cut "
            "before it was complete); '' for none.",
        ),
        click.option(
            "--max-invalid-retries",
            type=int,
            default=DEFAULT_MAX_INVALID_RETRIES,
            show_default=True,
            help="Times a row whose answer is invalid is asked again (with another seed) "
            "before it fails with error.type invalid_output.",
        ),
    ]
    return decorated(command, decorators)


def program_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--program``, ``--rollouts`` and ``--keep-calls``: several calls per row."""
    decorators = [
        click.option("--program", metavar="FILE.py:FUNCTION",
                     help="Run this async function(row, llm) for every row (or "
                     "module:FUNCTION); its calls share the run's pool and are journaled, and "
                     "the record's 'result' is what it returns."),
        click.option("--rollouts", type=int, default=1, show_default=True,
                     help="Runs of the program per row, with distinct seeds; 'result' is the "
                     "list of their results."),
        click.option("--keep-calls", is_flag=True,
                     help="Keep every call's request and answer in the record "
                     "('call_records')."),
    ]
    return decorated(command, decorators)




def reuse_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--rerun-if``, ``--cache-dir``, ``--cache-max-size`` and the budgets."""
    decorators = [
        click.option(
            "--rerun-if",
            metavar="EXPR",
            help="On resume, send again the rows whose record matches EXPR (e.g. "
            "'finish_reason == \"length\"', 'status == \"failed\" and error.type != "
            "\"bad_input\"') with this run's options; every other record is kept, even "
            "though options changed.",
        ),
        click.option(
            "--cache-dir",
            envvar="VBATCH_CACHE_DIR",
            type=click.Path(file_okay=False, path_type=Path),
            help="Reuse the answers of deterministic requests (--temperature 0 or a --seed) "
            "across runs from this directory's cache, for the same served model; identical "
            "requests of one run are sent once (env VBATCH_CACHE_DIR; off by default).",
        ),
        click.option(
            "--cache-max-size",
            default=DEFAULT_CACHE_MAX_SIZE,
            show_default=True,
            help="Most bytes the cache keeps; the least recently used answers go first.",
        ),
        click.option("--time-limit", metavar="DURATION",
                     help="Stop taking rows so that the run ends within this wall time (90s, "
                     "15m, 3h, 1h30m; exit 5): a rerun carries on."),
        click.option("--token-budget", metavar="N",
                     help="Stop once this many tokens were generated (2M, 500k; N+prompt "
                     "counts prompt tokens too; exit 5): a rerun carries on."),
        click.option("--max-requests", type=int,
                     help="Stop after this many requests, retries included (exit 5)."),
    ]
    return decorated(command, decorators)
