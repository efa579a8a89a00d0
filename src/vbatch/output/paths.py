"""What vbatch may do to OUTPUT before anything is sent: refuse a path it must not write."""

from __future__ import annotations

import os

from vbatch.config import RunConfig
from vbatch.errors import OutputError
from vbatch.output.formats import OutputFormat, output_format
from vbatch.output.manifest import manifest_path

__all__ = ["check_output_path"]


def check_output_path(config: RunConfig, fmt: OutputFormat | None = None) -> None:
    """Refuse an OUTPUT vbatch would damage: the input itself, a directory, another format,
    or an existing file that is not a vbatch output (no manifest beside it). Changes nothing.
    ``fmt``: the output's format, when the input decides it (else the output's name)."""
    final = config.output
    journal = (fmt or output_format(final)).journal(final)
    if journal != final:
        if final.is_dir():
            raise OutputError(f"-o {final} is a directory: give a file name")
        if final.exists() and not manifest_path(journal).exists():
            raise OutputError(
                f"{final} exists and is not a vbatch output (no {manifest_path(journal).name} "
                "beside it); it was not changed: move it away or choose another -o"
            )
        config = config.replace(output=journal)
    output = config.output
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
