"""The end of a run: the output in its final form, ``--stats-json``, and the summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import orjson

from vbatch.config import RunConfig
from vbatch.engine.stats import RunStats
from vbatch.errors import EXIT_FAILED_ROWS, EXIT_INTERRUPTED, EXIT_OK, write_failure
from vbatch.output.formats import OutputFormat, output_format

__all__ = ["Final", "RunResult", "report_run"]


@dataclass(frozen=True)
class Final:
    """The file the user asked for and its format; the run's records go to its journal."""

    format: OutputFormat
    path: Path

    @classmethod
    def of(cls, output: Path) -> Final:
        """The final file of a run whose records are written to ``output`` itself."""
        return cls(output_format(output), output)


@dataclass
class RunResult:
    """What a finished run did."""

    stats: RunStats
    interrupted: bool = False
    failures_are_lines: bool = False

    @property
    def exit_code(self) -> int:
        """0 when every input row has an ok record, 1 when some failed or have no record,
        130 when interrupted. With ``failures_are_lines`` (an OpenAI Batch run, as ``vllm
        run-batch``), a failed row is an error line of the output: 0 when every row has one."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        stats = self.stats
        failed = stats.failed or stats.already_failed
        if stats.missing or (failed and not self.failures_are_lines):
            return EXIT_FAILED_ROWS
        return EXIT_OK


def report_run(config: RunConfig, result: RunResult, say: Callable[[str], None],
               stream: TextIO, final: Final | None = None) -> None:
    """Finish the output (``--ordered``, its format: ``final``), write ``--stats-json``, print
    the summary."""
    final = final or Final.of(config.output)
    if not result.interrupted:
        if config.ordered or final.path != config.output:
            order = " in input order" if config.ordered else ""
            say(f"writing {final.path}{order}")
        writing = result.stats.clock()
        final.format.finish(config.output, final.path, config.ordered)
        result.stats.phases["writing"] = result.stats.clock() - writing
    if config.stats_json is not None:
        try:
            config.stats_json.write_bytes(
                orjson.dumps(result.stats.to_dict(), option=orjson.OPT_INDENT_2)
            )
        except OSError as exc:
            raise write_failure(config.stats_json, exc) from None
    if not config.quiet:
        stream.write(result.stats.summary_text() + "\n")
    failed = result.stats.failed + result.stats.already_failed
    if result.failures_are_lines and failed and not result.interrupted:
        where = config.error_file or final.path
        say(f"{failed} requests failed: their error lines are in {where}; the exit status is "
            "0 since every request has a line, as with vllm run-batch")
    if result.interrupted:
        say(f"interrupted: {result.stats.done} rows recorded this run, kept in "
                 f"{config.output}. Run the same command again to resume.")
