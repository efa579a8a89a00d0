"""The end of a run: the output in its final form, ``--stats-json``, and the summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import orjson

from vbatch.engine.stats import RunStats
from vbatch.errors import (
    EXIT_BUDGET,
    EXIT_FAILED_ROWS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    write_failure,
)
from vbatch.settings import OutputPaths

__all__ = ["RunResult", "report_run"]


@dataclass
class RunResult:
    """What a finished run did."""

    stats: RunStats
    interrupted: bool = False
    failures_are_lines: bool = False
    # The budget that stopped the run (--time-limit, --token-budget, --max-requests), if any.
    budget: str | None = None

    @property
    def exit_code(self) -> int:
        """0 when every input row has an ok record, 1 when some failed or have no record,
        5 when a budget stopped it, 130 when interrupted. With ``failures_are_lines`` (an
        OpenAI Batch run, as ``vllm run-batch``), a failed row is an error line of the
        output: 0 when every row has one."""
        if self.budget is not None:
            return EXIT_BUDGET
        if self.interrupted:
            return EXIT_INTERRUPTED
        stats = self.stats
        failed = stats.failed or stats.already_failed
        if stats.missing or (failed and not self.failures_are_lines):
            return EXIT_FAILED_ROWS
        return EXIT_OK


def report_run(paths: OutputPaths, quiet: bool, result: RunResult, say: Callable[[str], None],
               stream: TextIO, final: bool = True) -> None:
    """Finish the output: with ``final``, its file in its format (``--ordered``) and
    ``--stats-json``; then print the summary."""
    records = paths.records
    if final and not result.interrupted:
        if paths.ordered or paths.final != records:
            order = " in input order" if paths.ordered else ""
            say(f"writing {paths.final}{order}")
        writing = result.stats.clock()
        paths.format.finish(records, paths.final, paths.ordered)
        result.stats.phases["writing"] = result.stats.clock() - writing
    if final and paths.stats_json is not None:
        try:
            paths.stats_json.write_bytes(
                orjson.dumps(result.stats.to_dict(), option=orjson.OPT_INDENT_2)
            )
        except OSError as exc:
            raise write_failure(paths.stats_json, exc) from None
    if not quiet:
        stream.write(result.stats.summary_text() + "\n")
    failed = result.stats.failed + result.stats.already_failed
    if result.failures_are_lines and failed and not result.interrupted:
        where = paths.error_file or paths.final
        say(f"{failed} requests failed: their error lines are in {where}; the exit status is "
            "0 since every request has a line, as with vllm run-batch")
    if result.budget is not None:
        say(f"budget reached ({result.budget}): {result.stats.done} rows recorded this run, "
            f"kept in {records}; rerun to continue")
    elif result.interrupted:
        say(f"interrupted: {result.stats.done} rows recorded this run, kept in "
            f"{records}. Run the same command again to resume.")
