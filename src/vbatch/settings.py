"""What each stage of a run needs, made once from the :class:`~vbatch.RunConfig` the user wrote.

``RunConfig`` is the public, validated object of every option. At the start of a run, once,
:func:`settle` turns it into :class:`RunSettings`: the source (:class:`SourceSettings`), the
sending policy (:class:`SendPolicy`), the output's files (:class:`OutputPaths`) and the facts the
input decides (an OpenAI Batch file, a pooling job), and how rows become requests
(:class:`RequestSettings`). Nothing is changed after that: each stage
takes its part, and a Ray worker's shard gets paths of its own (:meth:`OutputPaths.for_shard`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from vbatch.budget import Budget
from vbatch.config import RunConfig
from vbatch.defaults import (
    DEFAULT_CONCURRENCY,
    DEFAULT_EMBEDDING_DTYPE,
    DEFAULT_ENDPOINT,
    DEFAULT_ID_FIELD,
    DEFAULT_INPUTS_PER_REQUEST,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_DOWNTIME,
    DEFAULT_MAX_RETRIES,
    DEFAULT_N,
    DEFAULT_ON_OVERFLOW,
    DEFAULT_PREFIX_ROUTING,
    DEFAULT_PROMPT_FIELD,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RETRY_BASE_DELAY,
    DEFAULT_SHUTDOWN_GRACE,
)
from vbatch.errors import ConfigError
from vbatch.output.formats import OutputFormat, output_format
from vbatch.output.formats.openai_batch import OpenAIBatch
from vbatch.output.lock import lock_path
from vbatch.output.records import taken_columns
from vbatch.program_loader import program_name
from vbatch.source.openai_batch import is_batch_input
from vbatch.source.readers import detect_format
from vbatch.source.spool import needs_spool
from vbatch.structured.answers import AnswerRules
from vbatch.structured.columns import parsed_columns
from vbatch.structured.specs import OutputSpec

__all__ = ["OutputPaths", "RunSettings", "SendPolicy", "SourceSettings", "settle"]

BATCH_FORMAT = "openai-batch"


@dataclass(frozen=True)
class SourceSettings:
    """Where the rows come from and how they are checked: ``path`` is a regular file or
    directory (a copy of ``given`` when that can be read only once: ``copied``)."""

    path: Path
    format: str | None
    given: Path
    id_field: str
    on_bad_row: str
    # "auto", "on" or "off" (vbatch.source.prefix)
    group_by_prefix: str

    @property
    def copied(self) -> bool:
        """Whether ``given`` is copied to ``path`` first (stdin, a pipe)."""
        return self.path != self.given


@dataclass(frozen=True)
class RequestSettings:
    """How a row becomes a request and fits the context: the endpoint kind, the prompt's
    fields and template, the sampling options, the fit policy (``on_overflow``), the fields
    kept in the record and the rows sent per pooling request."""

    endpoint: str = DEFAULT_ENDPOINT
    embedding_dtype: str = DEFAULT_EMBEDDING_DTYPE
    id_field: str = DEFAULT_ID_FIELD
    prompt_field: str = DEFAULT_PROMPT_FIELD
    system: str | None = None
    template: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = DEFAULT_N
    extra_body: Mapping[str, Any] | None = None
    keep: tuple[str, ...] = ()
    on_overflow: str = DEFAULT_ON_OVERFLOW
    inputs_per_request: int = DEFAULT_INPUTS_PER_REQUEST
    response_format: OutputSpec | None = None
    schema_field: str | None = None
    program: str | Callable[..., Any] | None = None
    rollouts: int = 1
    keep_calls: bool = False

    @classmethod
    def of(cls, config: RunConfig, id_field: str | None = None) -> RequestSettings:
        """The request options of ``config``; rows identified by ``id_field`` when the input
        says which (a batch file's ``custom_id``)."""
        options = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)}
        return cls(**{**options, "id_field": id_field or config.id_field})

    def generation_params(self, model: str | None) -> dict[str, Any]:
        """The options that decide what a row's result is (``model`` the one requests name);
        a resumed run must match them."""
        return {
            "endpoint": self.endpoint,
            "model": model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": list(self.stop),
            "n": self.n,
            "system": self.system,
            "template": self.template,
            "prompt_field": self.prompt_field,
            "id_field": self.id_field,
            "extra_body": dict(self.extra_body) if self.extra_body else None,
            "on_overflow": self.on_overflow,
            "response_format": (self.response_format.canonical()
                                if self.response_format is not None else None),
            "schema_field": self.schema_field,
            "program": program_name(self.program) if self.program is not None else None,
            "rollouts": self.rollouts if self.rollouts != 1 else None,
        }


@dataclass(frozen=True)
class OutputPaths:
    """Every file a run writes, named once from the output the user gave (``final``)."""

    final: Path
    format: OutputFormat
    records: Path
    server_log: Path
    timeline: Path | None
    lock: Path
    spool: Path
    shards: Path
    stats_json: Path | None = None
    error_file: Path | None = None
    ordered: bool = False
    # A program run's calls journal (vbatch.programs.journal).
    calls: Path | None = None

    @classmethod
    def of(cls, config: RunConfig, batch: bool) -> OutputPaths:
        """The files of a run of ``config``; ``batch``: its input is an OpenAI Batch file."""
        final = config.output
        parsed = parsed_columns(config.output_spec, taken_columns(config.keep), config.n)
        fmt = (OpenAIBatch(config.error_file) if batch
               else output_format(final).with_columns(parsed))
        records = fmt.journal(final)
        return cls(
            final=final, format=fmt, records=records,
            server_log=_beside(final, ".server.log"), timeline=_beside(final, ".timeline.jsonl"),
            lock=lock_path(records), spool=_beside(final, f".input.{os.getpid()}"),
            shards=config.shard_dir or _beside(final, ".shards"),
            stats_json=config.stats_json, error_file=config.error_file, ordered=config.ordered,
            calls=_beside(final, ".calls.jsonl"))

    @classmethod
    def for_shard(cls, records: Path, fmt: OutputFormat) -> OutputPaths:
        """A Ray worker's shard: its records file only (no timeline, summary or order)."""
        return cls(final=records, format=fmt, records=records,
                   server_log=_beside(records, ".server.log"), timeline=None,
                   lock=lock_path(records), spool=_beside(records, ".input"),
                   shards=_beside(records, ".shards"), calls=_beside(records, ".calls.jsonl"))


@dataclass(frozen=True)
class SendPolicy:
    """How requests are sent: bound, retries, timeouts, downtime, shutdown, the fit rule's
    answer to a context refusal (``clamp``)."""

    concurrency: int | str = DEFAULT_CONCURRENCY
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_base_delay: float = DEFAULT_RETRY_BASE_DELAY
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    max_downtime: float = DEFAULT_MAX_DOWNTIME
    clamp: bool = DEFAULT_ON_OVERFLOW == "clamp"
    prefix_routing: bool = DEFAULT_PREFIX_ROUTING
    answers: AnswerRules = dataclasses.field(default_factory=AnswerRules)
    budget: Budget = dataclasses.field(default_factory=Budget)

    @property
    def pool_size(self) -> int:
        """Most requests that can ever be in flight."""
        return self.concurrency if isinstance(self.concurrency, int) else self.max_concurrency

    @property
    def adaptive(self) -> bool:
        """Whether the bound follows the server's load (``--concurrency auto``)."""
        return self.concurrency == "auto"


@dataclass(frozen=True)
class RunSettings:
    """A run's parts, made once by :func:`settle`. ``options`` is the user's
    :class:`~vbatch.RunConfig`: the view (``quiet``, ``log_every``), the resume policy
    (``force``, ``retry_failed``) and the servers (:class:`~vbatch.servers.options.ServerOptions`
    is made from it) read their options there."""

    options: RunConfig
    source: SourceSettings
    requests: RequestSettings
    paths: OutputPaths
    send: SendPolicy
    openai_batch: bool
    pooling: bool
    # The output is a cache of answers by id (vbatch.generate's cache=): records of ids this
    # input lacks are kept, and a row is matched to its record wherever it stands.
    cache: bool = False

    def absolute(self) -> RunSettings:
        """These settings with every path absolute, for Ray workers on other machines."""
        source, paths, options = self.source, self.paths, self.options
        where: dict[str, Any] = {}
        if options.endpoints_file is not None:
            where["endpoints_file"] = options.endpoints_file.resolve()
        if options.model is not None and Path(options.model).is_dir():
            where["model"] = str(Path(options.model).resolve())
        return RunSettings(
            options=dataclasses.replace(options, **where) if where else options,
            source=SourceSettings(source.path.resolve(), source.format, source.given,
                                  source.id_field, source.on_bad_row, source.group_by_prefix),
            paths=OutputPaths(
                final=paths.final.resolve(), format=paths.format, records=paths.records.resolve(),
                server_log=paths.server_log.resolve(), timeline=paths.timeline,
                lock=paths.lock.resolve(), spool=paths.spool.resolve(),
                shards=paths.shards.resolve(),
                calls=paths.calls.resolve() if paths.calls is not None else None),
            requests=self.requests, send=self.send, openai_batch=self.openai_batch,
            pooling=self.pooling, cache=self.cache)


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def batch_input(config: RunConfig) -> bool:
    """Whether the input is an OpenAI Batch file (``--input-format openai-batch``, or a file
    whose first line is a batch request)."""
    batch = config.openai_batch or (config.input_format is None and is_batch_input(config.input))
    if batch and config.program is not None:
        raise ConfigError(f"{config.input} is an OpenAI Batch file, whose lines are requests: "
                          "--program runs on rows of a dataset")
    if batch and (config.response_format is not None or config.schema_field):
        raise ConfigError(f"{config.input} is an OpenAI Batch file: each line's body gives its "
                          "own response_format (or structured_outputs), which vbatch checks; "
                          "leave out --json-schema, --json, --regex, --choice, --grammar and "
                          "--schema-field")
    if not batch and config.error_file is not None:
        raise ConfigError("--error-file is for OpenAI Batch files (custom_id, url, body per "
                          f"line), and {config.input} is not one")
    return batch


def source_of(config: RunConfig, paths: OutputPaths, batch: bool) -> SourceSettings:
    """The source of a run: a batch file's rows are identified by ``custom_id`` and a line that
    cannot be sent is an error line, not a reason to stop; an input that can be read only once
    is read from its copy beside the output."""
    path, fmt = config.input, config.input_format
    if needs_spool(config.input):
        path = paths.spool
        try:
            fmt = detect_format(config.input, config.input_format)
        except ConfigError:
            fmt = "jsonl"
    # RunConfig has made a bool "on" or "off".
    grouping = cast(str, config.group_by_prefix)
    if batch:
        return SourceSettings(path, BATCH_FORMAT, config.input, "custom_id", "skip", grouping)
    return SourceSettings(path, fmt, config.input, config.id_field, config.on_bad_row, grouping)


def send_policy(config: RunConfig) -> SendPolicy:
    """How the requests of ``config`` are sent."""
    return SendPolicy(
        concurrency=config.concurrency, max_concurrency=config.max_concurrency,
        max_retries=config.max_retries, retry_base_delay=config.retry_base_delay,
        request_timeout=config.request_timeout, shutdown_grace=config.shutdown_grace,
        max_downtime=config.max_downtime, clamp=config.on_overflow == "clamp",
        prefix_routing=config.prefix_routing,
        answers=AnswerRules(config.invalid_finish_reasons, config.max_invalid_retries),
        budget=config.budget)


def settle(config: RunConfig, paths: OutputPaths, source: SourceSettings,
           pooling: bool, cache: bool = False) -> RunSettings:
    """The settings of a run of ``config``; ``pooling``: what the check of a batch file found
    (every line for a pooling url), else the endpoint kind's."""
    return RunSettings(options=config, source=source,
                       requests=RequestSettings.of(config, source.id_field),
                       paths=paths, send=send_policy(config),
                       openai_batch=source.format == BATCH_FORMAT,
                       pooling=config.pooling or pooling, cache=cache)
