"""What an output format is. Records are journaled as JSON lines while a run goes (that is
what makes a kill -9 lose nothing and a rerun resume); a format says which file names it
writes and turns the finished journal into the file a user opens."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vbatch.structured.columns import ParsedColumns

__all__ = ["OutputFormat"]


class OutputFormat(ABC):
    """One kind of output file; ``suffixes`` are the endings of the names it writes."""

    name: str
    suffixes: tuple[str, ...]

    def journal(self, output: Path) -> Path:
        """Where the run journals its records (JSON lines) for ``output``: resume reads it."""
        return output

    def with_columns(self, parsed: ParsedColumns | None) -> OutputFormat:
        """This format for records whose ``parsed`` value becomes typed columns ``parsed``
        (a format of JSON records keeps the value as it is)."""
        return self

    @abstractmethod
    def finish(self, journal: Path, output: Path, ordered: bool) -> None:
        """Make the finished run's file at ``output`` from ``journal``; ``ordered``: in input
        order."""
