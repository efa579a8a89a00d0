"""What vbatch may do to OUTPUT before anything is sent: refuse a path it must not write."""

from __future__ import annotations

import os

from vbatch.config import RunConfig
from vbatch.errors import OutputError
from vbatch.manifest import manifest_path

__all__ = ["OTHER_FORMATS", "check_output_path"]

# vbatch writes JSONL; these endings say a user expects another format.
OTHER_FORMATS = (".parquet", ".csv", ".tsv", ".arrow", ".feather", ".gz", ".bz2", ".xz", ".zst",
                 ".zip", ".xlsx")


def check_output_path(config: RunConfig) -> None:
    """Refuse an OUTPUT vbatch would damage: the input itself, a directory, another format,
    or an existing file that is not a vbatch output (no manifest beside it). Changes nothing."""
    output = config.output
    if output.name.lower().endswith(OTHER_FORMATS):
        raise OutputError(
            f"-o {output}: vbatch writes JSON Lines, not {output.suffix}; name it .jsonl"
        )
    if output.is_dir():
        raise OutputError(f"-o {output} is a directory: give a file name")
    stats = config.stats_json
    if stats is not None and not stats.parent.is_dir():
        raise OutputError(f"--stats-json {stats}: the directory {stats.parent} does not exist; "
                          "create it or choose another path")
    if not output.exists():
        return
    try:
        same = config.input.exists() and os.path.samefile(config.input, output)
    except OSError:
        same = False
    if same:
        raise OutputError(f"-o {output} is the input file (or a link to it): choose another -o")
    if output.stat().st_size and not manifest_path(output).exists():
        raise OutputError(
            f"{output} exists and is not a vbatch output (no {manifest_path(output).name} "
            "beside it); it was not changed: move it away or choose another -o"
        )
