"""What vbatch may do to OUTPUT before anything is sent: refuse a path it must not write."""

from __future__ import annotations

import os
from pathlib import Path

from vbatch.errors import OutputError
from vbatch.output.manifest import manifest_path

__all__ = ["check_output_path"]


def _not_ours(path: Path, journal: Path) -> OutputError:
    return OutputError(
        f"{path} exists and is not a vbatch output (no {manifest_path(journal).name} "
        "beside it); it was not changed: move it away or choose another -o"
    )


def check_output_path(final: Path, output: Path, input_path: Path,
                      stats: Path | None) -> None:
    """Refuse an OUTPUT ``final`` (its records journaled to ``output``) vbatch would damage:
    the input itself, a directory, or an existing file that is not a vbatch output (no
    manifest beside its journal); and a ``--stats-json`` in no directory. Changes nothing."""
    for path in (final, output):
        if path.is_dir():
            raise OutputError(f"-o {path} is a directory: give a file name")
    if output != final and final.exists() and not manifest_path(output).exists():
        raise _not_ours(final, output)
    if stats is not None and not stats.parent.is_dir():
        raise OutputError(f"--stats-json {stats}: the directory {stats.parent} does not exist; "
                          "create it or choose another path")
    if not output.exists():
        return
    try:
        same = input_path.exists() and os.path.samefile(input_path, output)
    except OSError:
        same = False
    if same:
        raise OutputError(f"-o {output} is the input file (or a link to it): choose another -o")
    if output.stat().st_size and not manifest_path(output).exists():
        raise _not_ours(output, output)
