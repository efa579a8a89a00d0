"""JSON Lines: the journal is the output itself."""

from __future__ import annotations

from pathlib import Path

from vbatch.output.formats.base import OutputFormat
from vbatch.output.writer import write_in_input_order

__all__ = ["JsonLines"]


class JsonLines(OutputFormat):
    """One JSON record per line, in completion order unless ``--ordered``."""

    name = "JSON Lines"
    suffixes = (".jsonl", ".json", ".ndjson", ".jl")

    def finish(self, journal: Path, output: Path, ordered: bool) -> None:
        if ordered:
            write_in_input_order(output)
