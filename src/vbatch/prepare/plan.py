"""``vbatch plan``: exact prompt-token counts of a dataset and the context that fits it."""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vbatch.config import RunConfig
from vbatch.prepare.builder import RequestBuilder
from vbatch.prepare.fit import context_needed, fitting_context, not_fitting
from vbatch.prepare.scan import check_row, scan_input
from vbatch.prepare.tokens import LocalTokenCounter, model_context_limit
from vbatch.settings import RequestSettings, SourceSettings
from vbatch.source.readers import read_rows

SHOWN_IDS = 50


@dataclass
class TokenPlan:
    """The token distribution of a dataset and what fits."""

    rows: int
    max_tokens: int | None
    model_context: int | None
    quantiles: dict[str, int]
    histogram: list[tuple[int, int]]
    fitting_max_model_len: int | None
    max_model_len: int | None = None
    not_fitting: int = 0
    not_fitting_ids: list[tuple[str, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data (what ``--json`` prints)."""
        return {
            "rows": self.rows,
            "max_tokens": self.max_tokens,
            "prompt_tokens": self.quantiles,
            "histogram": [{"up_to": edge, "rows": count} for edge, count in self.histogram],
            "model_max_model_len": self.model_context,
            "fitting_max_model_len": self.fitting_max_model_len,
            "max_model_len": self.max_model_len,
            "rows_not_fitting": self.not_fitting,
            "ids_not_fitting": [{"id": i, "prompt_tokens": n} for i, n in self.not_fitting_ids],
        }

    def text(self) -> str:
        """The plan for people."""
        q = self.quantiles
        lines = [f"rows: {self.rows}"]
        if self.rows:
            lines.append(
                f"prompt tokens: min {q['min']}, p50 {q['p50']}, p95 {q['p95']}, "
                f"p99 {q['p99']}, max {q['max']}"
            )
            widest = max(count for _, count in self.histogram)
            for edge, count in self.histogram:
                bar = "#" * max(1 if count else 0, round(40 * count / widest))
                lines.append(f"  <= {edge:>7} tokens  {count:>9}  {bar}")
        if self.fitting_max_model_len is not None:
            capped = (
                " (capped at the model's own context)"
                if self.model_context and self.fitting_max_model_len == self.model_context
                and q.get("max", 0) + (self.max_tokens or 0) > self.model_context
                else ""
            )
            lines.append(
                f"--max-model-len that fits every row with max_tokens {self.max_tokens}: "
                f"{self.fitting_max_model_len}{capped}"
            )
        if self.model_context:
            lines.append(f"the model's own context: {self.model_context}")
        if self.max_model_len is not None:
            lines.append(f"rows that do not fit --max-model-len {self.max_model_len}: "
                         f"{self.not_fitting}")
            for row_id, tokens in self.not_fitting_ids:
                lines.append(f"  {row_id} ({tokens} prompt tokens)")
            if self.not_fitting > len(self.not_fitting_ids):
                lines.append(f"  ... and {self.not_fitting - len(self.not_fitting_ids)} more")
        return "\n".join(lines)


def _histogram(counts: np.ndarray) -> list[tuple[int, int]]:
    top = max(16, int(counts.max()))
    edges = [16]
    while edges[-1] < top:
        edges.append(edges[-1] * 2)
    binned = np.searchsorted(np.asarray(edges), counts, side="left")
    tally = np.bincount(binned, minlength=len(edges))
    return [(edge, int(tally[i])) for i, edge in enumerate(edges)]


def make_plan(
    counts: array[int] | np.ndarray,
    max_tokens: int | None,
    model_context: int | None,
    max_model_len: int | None = None,
) -> TokenPlan:
    """Summarise prompt-token ``counts`` (one per row)."""
    values = np.asarray(counts, dtype=np.int64)
    if values.size == 0:
        return TokenPlan(0, max_tokens, model_context, {}, [], None, max_model_len)
    quantiles = {"min": int(values.min()), "max": int(values.max())}
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        quantiles[name] = int(np.percentile(values, q, method="inverted_cdf"))
    need = context_needed(int(values.max()), max_tokens)
    return TokenPlan(
        rows=int(values.size),
        max_tokens=max_tokens,
        model_context=model_context,
        quantiles=quantiles,
        histogram=_histogram(values),
        fitting_max_model_len=fitting_context(need, model_context),
        max_model_len=max_model_len,
    )


def ids_of(source: SourceSettings, builder: RequestBuilder, indices: np.ndarray,
           counts: array[int] | np.ndarray, most: int = SHOWN_IDS) -> list[tuple[str, int]]:
    """``(id, prompt tokens)`` of the first ``most`` rows among ``indices``."""
    wanted = set(indices[:most].tolist())
    found: list[tuple[str, int]] = []
    if not wanted:
        return found
    for row in read_rows(source.path, source.format):
        if row.index in wanted:
            found.append((check_row(builder, row).row_id, int(counts[row.index])))
            if len(found) == len(wanted):
                break
    return found


def context_from_data(counts: np.ndarray | None, max_tokens: int | np.ndarray | None,
                      model: str, say: Callable[[str], None]) -> int | None:
    """``--max-model-len`` from the longest prompt (``counts``) and ``max_tokens`` (the run's,
    or each row's), within the model's own context; the model's own when some counted row
    asks no limit."""
    model_context = model_context_limit(model)
    if counts is None or counts.size == 0 or max_tokens is None:
        return model_context
    if isinstance(max_tokens, np.ndarray) and bool(np.any((max_tokens == 0) & (counts > 0))):
        return model_context
    needs = context_needed(counts, max_tokens)
    row = int(np.argmax(needs))
    asked = int(max_tokens[row]) if isinstance(max_tokens, np.ndarray) else max_tokens
    context = fitting_context(int(needs[row]), model_context)
    say(f"--max-model-len {context}: fits the longest prompt ({int(counts[row])} tokens) with "
        f"max_tokens {asked}" + (f" (the model allows {model_context})" if model_context else ""))
    return context


def plan_input(
    input_path: Path,
    *,
    model_path: str,
    max_tokens: int | None = None,
    max_model_len: int | None = None,
    **options: Any,
) -> TokenPlan:
    """The token plan of a dataset for the model (directory or hub name) at ``model_path``."""
    config = RunConfig(input=input_path, output=Path(os.devnull), model=model_path,
                       max_tokens=max_tokens, **options)
    source = SourceSettings(config.input, config.input_format, config.input, config.id_field,
                            config.on_bad_row, group_by_prefix="off")
    builder = RequestBuilder(RequestSettings.of(config), model_path)
    scan = scan_input(source, builder, LocalTokenCounter(model_path))
    assert scan.prompt_tokens is not None
    counts = np.asarray(scan.prompt_tokens, dtype=np.int64)
    if scan.bad:
        counts = counts[counts > 0]
    token_plan = make_plan(counts, max_tokens, model_context_limit(model_path), max_model_len)
    if max_model_len is not None:
        offending = not_fitting(scan.prompt_tokens, max_tokens, max_model_len)
        token_plan.not_fitting = int(offending.size)
        token_plan.not_fitting_ids = ids_of(source, builder, offending, scan.prompt_tokens,
                                            most=10_000)
    return token_plan
