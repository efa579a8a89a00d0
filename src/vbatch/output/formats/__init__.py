"""Output formats: a new one is one module here and one entry in :data:`FORMATS`."""

from __future__ import annotations

from pathlib import Path

from vbatch.errors import OutputError
from vbatch.output.formats.base import OutputFormat
from vbatch.output.formats.jsonl import JsonLines
from vbatch.output.formats.parquet import Parquet

__all__ = ["FORMATS", "OutputFormat", "output_format"]

FORMATS: tuple[OutputFormat, ...] = (JsonLines(), Parquet())
# Endings that say a user expects a format vbatch does not write (yet).
_FOREIGN = (".csv", ".tsv", ".arrow", ".feather", ".gz", ".bz2", ".xz", ".zst",
            ".zip", ".xlsx")


def output_format(output: Path) -> OutputFormat:
    """The format of ``output``, from its name: a known ending picks that format, another
    file's ending is refused (OutputError), any other name is JSON Lines."""
    name = output.name.lower()
    for candidate in FORMATS:
        if name.endswith(candidate.suffixes):
            return candidate
    if name.endswith(_FOREIGN):
        known = ", ".join(suffix for f in FORMATS for suffix in f.suffixes)
        raise OutputError(f"-o {output}: vbatch does not write {output.suffix} files; name "
                          f"it with one of {known}")
    return FORMATS[0]
