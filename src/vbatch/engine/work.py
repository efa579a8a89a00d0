"""The rows still to do, as work items: each checked, fitted to the context and fingerprinted.

A row that cannot be sent (bad input under ``--on-bad-row skip``, too long for the context)
becomes its failed record here, never a request.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from vbatch.engine.items import WorkItem
from vbatch.errors import ContextOverflowError
from vbatch.output.ledger import fingerprint_text, is_set
from vbatch.output.records import json_value, unsent_record
from vbatch.prepare.builder import RequestBuilder
from vbatch.prepare.fit import fit_row
from vbatch.prepare.scan import check_row
from vbatch.settings import RequestSettings
from vbatch.source.readers import RawRow

__all__ = ["work_items"]


def work_items(requests: RequestSettings, builder: RequestBuilder, rows: Iterable[RawRow],
               done: bytes, first_row: int, counts: Any, context: int | None
               ) -> Iterator[WorkItem | dict[str, Any]]:
    """A work item, or a ready failed record, for each row of ``rows`` not marked ``done``
    (one bit per row from ``first_row``); ``counts``: prompt tokens by row, when counted."""
    keep_fields = requests.keep
    context = context if counts is not None else None
    for row in rows:
        if is_set(done, row.index - first_row):
            continue
        checked = check_row(builder, row)
        data = row.data or {}
        fields = {name: json_value(data.get(name)) for name in keep_fields}
        if checked.error is not None:
            yield unsent_record(checked.row_id, row.index, checked.error, fields)
            continue
        assert checked.content is not None
        tokens = counts[row.index - first_row] if counts is not None else None
        asked = max_tokens = builder.max_tokens_of(checked.content)
        if context is not None and tokens is not None:
            fit = fit_row(tokens, max_tokens, context, requests.on_overflow)
            if fit.problem is not None:
                error = ContextOverflowError(fit.problem)
                yield unsent_record(checked.row_id, row.index, error, fields)
                continue
            if fit.clamped:
                max_tokens = fit.max_tokens
                fields["clamped_max_tokens"] = max_tokens
        body = builder.body(checked.content, max_tokens)
        fingerprint = builder.request_fingerprint(checked.content, body, max_tokens != asked)
        fields["request_hash"] = fingerprint_text(fingerprint)
        route = builder.route_for(checked.content)
        yield WorkItem(checked.row_id, row.index, body, fields, tokens, max_tokens,
                       None if route == builder.route else route,
                       builder.spec_of(checked.content),
                       deterministic=builder.deterministic(checked.content))
