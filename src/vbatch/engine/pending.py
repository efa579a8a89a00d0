"""The rows a job still has to send: its input (or one shard of it), checked and counted,
less the rows the output already holds."""

from __future__ import annotations

import asyncio
import os
from array import array
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vbatch.engine.items import WorkItem
from vbatch.engine.resume import reconcile_input, replace_changed, say_repairs
from vbatch.engine.work import work_items
from vbatch.errors import ConfigError, InputError
from vbatch.output.ledger import OutputState, done_mask, read_output, remove_records
from vbatch.output.manifest import check_manifest
from vbatch.output.select import RecordTest, matching_ids, record_test
from vbatch.prepare.builder import RequestBuilder
from vbatch.prepare.fit import not_fitting
from vbatch.prepare.plan import ids_of
from vbatch.prepare.scan import CheckCount, InputScan, RowSource, prefix_order_of, scan_input
from vbatch.prepare.tokens import TokenCounter
from vbatch.settings import RunSettings
from vbatch.source.prefix import can_seek
from vbatch.source.readers import RawRow, read_rows
from vbatch.source.shards import Shard, read_shard

__all__ = ["PendingRows", "file_identity"]

# Rows read between two looks at whether the input changed while it is sent (a stat costs
# about a microsecond).
_STAT_EVERY = 64


def file_identity(path: Path) -> tuple[int, ...]:
    """What says a file is still the one read: device, inode, size and modification time."""
    try:
        info = os.stat(path)
    except OSError:
        return ()
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _changed(path: Path) -> InputError:
    return InputError(str(path), "the input changed while its rows were being sent (rewritten "
                      "or grown since the check)", hint="nothing more was sent; the records "
                      "written so far are kept: run the same command again, it checks the "
                      "input anew")


class PendingRows:
    """The rows of the run's input (of ``shard``) and which of them the output ``records``
    already holds; ``params`` are the generation parameters the output's manifest must match."""

    def __init__(self, settings: RunSettings, records: Path, builder: RequestBuilder,
                 params: dict[str, Any], say: Callable[[str], None], shard: Shard | None = None):
        self._options = settings.options
        self._requests = settings.requests
        self._source = source = settings.source
        self._records = records
        self._cache = settings.cache
        self._builder = builder
        self._params = params
        self._say = say
        self._shard = shard
        self._rows: RowSource = (
            partial(read_shard, source.path, source.format, shard) if shard is not None
            else partial(read_rows, source.path, source.format)
        )
        self._first_row = shard.first_row if shard is not None else 0
        self._identity: tuple[int, ...] = ()
        self._scan: InputScan | None = None
        self._mask = b""
        self.already = 0
        self.already_failed = 0
        # Rows whose records --rerun-if removed, to be sent again.
        self.rerun = 0
        # "on" or "off" once prepared: whether the rows are grouped by prefix (auto decided).
        self.grouping = source.group_by_prefix
        self._orders_rows = True

    def decide_grouping_only(self) -> None:
        """Under ``--group-by-prefix auto``, decide whether grouping pays (:attr:`grouping`)
        but keep reading the rows in input order: the Ray driver decides once for the workers,
        which group their own shards."""
        self._orders_rows = False

    @property
    def total(self) -> int:
        """Rows of the input (of the shard), once prepared."""
        assert self._scan is not None, "prepare() first"
        return self._scan.total

    @property
    def first_row(self) -> int:
        """The input position of the first row (of the shard)."""
        return self._first_row

    @property
    def done_mask(self) -> bytes:
        """One packed bit per row, set where the output already has its record."""
        return self._mask

    @property
    def prompt_token_counts(self) -> array[int] | None:
        """Prompt tokens by row (4 bytes each), when counted."""
        return self._scan.prompt_tokens if self._scan is not None else None

    @property
    def prompt_tokens(self) -> np.ndarray | None:
        """Prompt tokens by row, when counted."""
        if self._scan is None or self._scan.prompt_tokens is None:
            return None
        return np.asarray(self._scan.prompt_tokens, dtype=np.int64)

    @property
    def max_tokens(self) -> int | np.ndarray | None:
        """The ``max_tokens`` rows ask for: the run's, or each row's own (0: none)."""
        if self._scan is None or self._scan.asked_tokens is None:
            return self._requests.max_tokens
        return np.asarray(self._scan.asked_tokens, dtype=np.int64)

    async def prepare(self, counter: TokenCounter | None, checked: CheckCount | None = None
                      ) -> None:
        """Check the manifest, repair and read the output, check (and count) the input
        (``checked`` counts the rows as they are checked)."""
        options, source, records = self._options, self._source, self._records
        self._identity = file_identity(source.path)
        rerun_if = options.rerun_if
        check_manifest(records, self._params, force=options.force or rerun_if is not None)
        state = read_output(records, retry_failed=options.retry_failed)
        say_repairs(state, records, self._say)
        if rerun_if is not None:
            state = self._rerun(record_test(rerun_if), state)
        counting = " and counting prompt tokens" if counter is not None else ""
        self._say(f"checking {source.path}{counting}")
        scan = await asyncio.to_thread(scan_input, source, self._builder, counter, self._rows,
                                       bool(state.done_hashes.size), checked)
        await asyncio.to_thread(self._follow_prefix_order, scan)
        if scan.counting_error:
            self._say(f"counting prompt tokens failed ({scan.counting_error}); rows are not "
                     "fitted to the context before sending")
        if rerun_if is None or options.force:
            state = replace_changed(source, records, options.force, self._builder, scan, state,
                                    self._say)
        if not self._cache:
            state = reconcile_input(source, records, options.force, scan, state, self._say)
        self._mask, self.already = done_mask(scan.id_hashes, state)
        self.already_failed = state.failed
        scan.id_hashes = np.empty(0, np.int64)
        scan.fingerprints = None
        self._scan = scan

    def _rerun(self, test: RecordTest, state: OutputState) -> OutputState:
        """``--rerun-if``: remove the records ``test`` holds for, in one atomic rewrite, so
        that their rows are sent again with this run's options; every other record is kept as
        it is, whatever options made it."""
        records = self._records
        matched = matching_ids(records, test)
        self.rerun = int(matched.size)
        if not matched.size:
            self._say(f"--rerun-if: no record of {records} matches: nothing is sent again")
            return state
        remove_records(records, matched)
        self._say(f"--rerun-if: sending {matched.size} rows again; their old records in "
                  f"{records} were removed")
        return read_output(records, retry_failed=False)

    async def adopt(self, done_bits: bytes, prompt_tokens: array[int] | None) -> None:
        """Take a checked shard from the driver: rows already done, prompt tokens by row.

        Rows this shard's own output already holds (a worker died on it) are skipped too.
        """
        assert self._shard is not None, "adopt() runs a shard"
        self._identity = file_identity(self._source.path)
        rows = self._shard.rows
        state = read_output(self._records, retry_failed=False)
        say_repairs(state, self._records, self._say)
        done = np.unpackbits(np.frombuffer(done_bits, np.uint8), count=rows).astype(bool)
        if state.done_hashes.size or self._source.group_by_prefix != "off":
            scan = await asyncio.to_thread(scan_input, self._source, self._builder, None,
                                           self._rows)
            if state.done_hashes.size:
                done |= np.isin(scan.id_hashes, state.done_hashes)
            await asyncio.to_thread(self._follow_prefix_order, scan)
        self._mask = np.packbits(done).tobytes()
        self.already = int(np.count_nonzero(done))
        self.already_failed = state.failed
        self._scan = InputScan(rows, 0, np.empty(0, np.int64), prompt_tokens)

    def _follow_prefix_order(self, scan: InputScan) -> None:
        """Group the rows by prefix (``--group-by-prefix``; ``auto``: where that pays): read
        them in the order the scan found, from a copy where the input cannot seek."""
        prefix, sample, source = scan.prefix_order, scan.prefix_sample, self._source
        scan.prefix_order = scan.prefix_sample = None
        if sample is not None:
            sharing = sample.sharing()
            self.grouping = "on" if sharing.pays else "off"
            if not sharing.pays:
                return
            self._say(f"grouping rows by prompt prefix for the server's prefix cache: "
                      f"{sharing.describe()} (--group-by-prefix off keeps the input order)")
            if not self._orders_rows:
                return
            prefix = prefix_order_of(source, self._builder, self._rows)
        if prefix is None:
            return
        if not can_seek(source.path, source.format):
            self._say(f"copying the rows of {source.given} beside the output, to read them "
                      "grouped")
            prefix.spool(self._rows, self._records.parent, str(source.given))
        self._rows = partial(prefix.rows, source.path, prefix.order(), self._first_row)

    def check_fit(self, context: int | None) -> None:
        """With ``--on-overflow fail``, stop before sending when rows do not fit ``context``."""
        requests = self._requests
        counts = self.prompt_tokens
        if context is None or counts is None or requests.on_overflow != "fail":
            return
        offending = not_fitting(counts, self.max_tokens, context)
        if offending.size:
            shown = ids_of(self._source, self._builder, offending, counts)
            listed = ", ".join(f"{row_id} ({tokens} tokens)" for row_id, tokens in shown)
            more = f" and {offending.size - len(shown)} more" if offending.size > len(shown) else ""
            asked = ("their own max_tokens" if self._builder.asks_per_row
                     else f"max_tokens {requests.max_tokens}")
            raise ConfigError(
                f"{offending.size} rows do not fit a context of {context} tokens with {asked}: "
                f"{listed}{more}. Nothing was sent. Use "
                "--on-overflow clamp or skip, a larger --max-model-len, or a smaller --max-tokens."
            )

    def work(self, context: int | None) -> Iterator[WorkItem | dict[str, Any]]:
        """A work item (or a ready failed record) for each row not done, fitted to ``context``."""
        counts = self._scan.prompt_tokens if self._scan is not None else None
        return work_items(self._requests, self._builder, self._read_again(), self._mask,
                          self._first_row, counts, context)

    def _read_again(self) -> Iterator[RawRow]:
        """The rows, read a second time, as long as they are the ones checked: a file that
        changes while it is sent (rewritten, grown) stops the run with an error, before a row
        read after the change is sent. Rows are read :data:`_STAT_EVERY` at a time and given
        out only once the file is seen unchanged after they were read."""
        path, first, total = self._source.path, self._first_row, self.total
        checked = self._identity
        read: list[RawRow] = []
        for row in self._rows():
            if row.index - first >= total:
                raise _changed(path)
            read.append(row)
            if len(read) == _STAT_EVERY:
                if file_identity(path) != checked:
                    raise _changed(path)
                yield from read
                read.clear()
        if file_identity(path) != checked:
            raise _changed(path)
        yield from read
