"""The OpenAI Batch file format (what ``vllm run-batch`` reads): one request per line,
``{"custom_id", "method", "url", "body"}``.

:func:`is_batch_file` recognises one from its first line; :func:`check_batch_file` reads the
whole file once and reports every file-level problem at once, with OpenAI's error codes and
line numbers, before anything is sent.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from vbatch.errors import ConfigError, InputError
from vbatch.ids import hash_array, id_hash, repeated_hashes
from vbatch.source.readers import open_binary, without_bom
from vbatch.source.spool import needs_spool

__all__ = ["BATCH_ROUTES", "POOLING_URLS", "BatchFileError", "BatchSummary", "batch_pooling",
           "check_batch_file", "is_batch_file", "is_batch_input"]

# The urls a batch line may name, and the route each takes under the server's /v1 API
# (vLLM also serves /score and /rerank there, and /v2/rerank's handler is /rerank's).
BATCH_ROUTES = {
    "/v1/chat/completions": "/chat/completions",
    "/v1/completions": "/completions",
    "/v1/embeddings": "/embeddings",
    "/v1/responses": "/responses",
    "/score": "/score",
    "/v1/score": "/score",
    "/rerank": "/rerank",
    "/v1/rerank": "/rerank",
    "/v2/rerank": "/rerank",
}
# The urls answered by a pooling model (vLLM's pooling runner) rather than a generating one.
POOLING_URLS = frozenset({"/v1/embeddings", "/score", "/v1/score", "/rerank", "/v1/rerank",
                          "/v2/rerank"})
SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class BatchSummary:
    """What a checked batch file asks for: how many requests go to generation urls and how
    many to pooling urls (the rest have urls vbatch does not send to)."""

    requests: int
    generation: int
    pooling: int


class BatchFileError(InputError):
    """The batch file has lines that are not batch requests; ``problems`` lists them all
    (line number, OpenAI error code, message)."""

    def __init__(self, path: Path, problems: list[tuple[int, str, str]]):
        self.problems = problems
        shown = "; ".join(f"line {line}: {code}: {message}"
                          for line, code, message in problems[:SHOWN_PROBLEMS])
        more = (f"; and {len(problems) - SHOWN_PROBLEMS} more"
                if len(problems) > SHOWN_PROBLEMS else "")
        super().__init__(str(path), f"{len(problems)} lines are not valid batch requests: "
                         f"{shown}{more}", hint="nothing was sent; fix the file and run again")


def is_batch_file(path: Path) -> bool:
    """Whether the first line of ``path`` is a batch request (has custom_id and body)."""
    try:
        with open_binary(path) as handle:
            for line in handle:
                if line.strip():
                    first = orjson.loads(without_bom(line))
                    return isinstance(first, dict) and "custom_id" in first and "body" in first
    except (OSError, ValueError, EOFError):
        return False
    return False


def check_batch_file(path: Path) -> BatchSummary:
    """Every line's batch-level validity; returns what the file asks for, or raises
    :class:`BatchFileError` listing every bad line.

    Memory stays flat in the number of lines: custom_ids are kept as 8-byte hashes, and only
    when two hashes match is the file read again for the lines of those ids."""
    problems: list[tuple[int, str, str]] = []
    hashes = array("q")
    count = generation = pooling = 0
    with open_binary(path) as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            count += 1
            try:
                line = orjson.loads(without_bom(raw))
            except orjson.JSONDecodeError as exc:
                problems.append((line_no, "invalid_json_line", f"not JSON ({exc})"))
                continue
            if not isinstance(line, dict):
                problems.append((line_no, "invalid_json_line", "not a JSON object"))
                continue
            custom_id = line.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                problems.append((line_no, "missing_custom_id",
                                 "custom_id must be a non-empty string"))
            else:
                hashes.append(id_hash(custom_id))
            url = line.get("url")
            if not isinstance(url, str):
                problems.append((line_no, "missing_required_parameter", "url is required"))
            elif url in POOLING_URLS:
                pooling += 1
            elif url in BATCH_ROUTES:
                generation += 1
            body = line.get("body")
            if not isinstance(body, dict):
                problems.append((line_no, "missing_required_parameter",
                                 "body must be a JSON object"))
            else:
                problems += _bad_limits(line_no, body)
            if line.get("method", "POST") != "POST":
                problems.append((line_no, "invalid_method", "method must be POST"))
    problems += _duplicates(path, hash_array(hashes))
    if problems:
        raise BatchFileError(path, sorted(problems))
    return BatchSummary(count, generation, pooling)


# The largest output limit a line may ask for (a signed 32-bit number, as vLLM takes it).
_MOST_TOKENS = 2**31 - 1


def _bad_limits(line_no: int, body: dict[str, object]) -> list[tuple[int, str, str]]:
    """An ``invalid_value`` problem for an output limit that is not a whole number from 1."""
    problems = []
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not (
                1 <= value <= _MOST_TOKENS):
            problems.append((line_no, "invalid_value", f"body.{name} must be a whole number "
                             f"from 1 to {_MOST_TOKENS}, not {value!r}"))
    return problems


def _duplicates(path: Path, hashes: np.ndarray) -> list[tuple[int, str, str]]:
    """A ``duplicate_custom_id`` problem for each line whose custom_id an earlier line has."""
    suspects = set(repeated_hashes(hashes).tolist())
    if not suspects:
        return []
    problems = []
    first_line: dict[str, int] = {}
    with open_binary(path) as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                custom_id = orjson.loads(without_bom(raw)).get("custom_id")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if not isinstance(custom_id, str) or id_hash(custom_id) not in suspects:
                continue
            if custom_id in first_line:
                problems.append((line_no, "duplicate_custom_id",
                                 f"custom_id {custom_id!r} is also on line "
                                 f"{first_line[custom_id]}"))
            else:
                first_line[custom_id] = line_no
    return problems


def is_batch_input(path: Path) -> bool:
    """Whether ``path`` is a regular file whose first line is a batch request."""
    return not needs_spool(path) and path.is_file() and is_batch_file(path)


def batch_pooling(summary: BatchSummary, input_path: Path, remote: bool, model: str | None
                  ) -> bool:
    """Whether a checked batch file is a pooling job (every request for a pooling url): its
    managed server runs a pooling model. A file that mixes both kinds needs ``--model`` (a
    model that serves them all) or running servers."""
    if summary.pooling and summary.generation and not remote and model is None:
        raise ConfigError(
            f"{input_path} has {summary.generation} requests for generation urls and "
            f"{summary.pooling} for pooling urls (embeddings, score, rerank): no one embedded "
            "model serves both; give --model, or --base-url for running servers"
        )
    return bool(summary.pooling) and not summary.generation
