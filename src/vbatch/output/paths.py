"""What vbatch may do to OUTPUT before anything is sent: refuse a path it must not write."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path

import orjson

from vbatch.errors import OutputError
from vbatch.output.manifest import manifest_path

__all__ = ["check_log_path", "check_output_path", "check_side_file", "is_error_file",
           "is_stats_file", "remove_stale_spools"]

# The keys every --stats-json that vbatch writes has.
_STATS_KEYS = frozenset({"rows_total", "rows_ok", "rows_failed", "wall_time_s"})
# The keys of every line of an OpenAI Batch output (and of an --error-file).
_BATCH_LINE_KEYS = frozenset({"id", "custom_id", "response", "error"})


def _not_ours(path: Path, journal: Path) -> OutputError:
    return OutputError(
        f"{path} exists and is not a vbatch output (no {manifest_path(journal).name} "
        "beside it); it was not changed: move it away or choose another -o"
    )


def check_output_path(final: Path, output: Path, input_path: Path,
                      stats: Path | None = None, error_file: Path | None = None) -> None:
    """Refuse an OUTPUT ``final`` (its records journaled to ``output``) vbatch would damage:
    the input itself, a directory, or an existing file that is not a vbatch output (no
    manifest beside its journal); and a ``--stats-json`` or ``--error-file`` that is not
    vbatch's (:func:`check_side_file`). Changes nothing."""
    for path in (final, output):
        if path.is_dir():
            raise OutputError(f"-o {path} is a directory: give a file name")
        if path.exists() and not path.is_file():
            raise OutputError(f"-o {path} is not a regular file (a pipe, a device, a socket): "
                              "vbatch appends records to a file it can read back; give a "
                              "file name")
    if output != final and final.exists() and not manifest_path(output).exists():
        raise _not_ours(final, output)
    _check_manifest_file(manifest_path(output))
    others = ((input_path, "the input"), (final, "the output"), (output, "the output"))
    check_side_file(stats, "--stats-json", is_stats_file, *others)
    check_side_file(error_file, "--error-file", is_error_file, *others)
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


def _check_manifest_file(path: Path) -> None:
    """Refuse a manifest path that holds something vbatch did not write."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_file():
        raise OutputError(f"{path} is not a regular file: it was not changed; move it away or "
                          "choose another -o")
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        data = None
    if not (isinstance(data, dict) and "vbatch_version" in data) and path.stat().st_size:
        raise OutputError(f"{path} exists and is not a vbatch manifest: it was not changed; "
                          "move it away or choose another -o")


def _first_line(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.readline(1 << 20)


def is_stats_file(path: Path) -> bool:
    """Whether ``path`` holds a summary vbatch wrote (``--stats-json``)."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.keys() >= _STATS_KEYS


def is_error_file(path: Path) -> bool:
    """Whether ``path`` holds OpenAI Batch output lines (an ``--error-file`` vbatch wrote)."""
    try:
        line = orjson.loads(_first_line(path))
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(line, dict) and line.keys() >= _BATCH_LINE_KEYS


def check_side_file(path: Path | None, option: str, ours: Callable[[Path], bool],
                    *others: tuple[Path, str]) -> None:
    """Refuse a file vbatch writes beside the output (``--stats-json``, ``--error-file``)
    where writing it would change what is not vbatch's: a file of ``others`` (the input, the
    output), a directory or something that is not a regular file, or an existing file that
    ``ours`` does not recognise. An empty file, or one vbatch wrote before, is rewritten.
    Changes nothing."""
    if path is None:
        return
    if path.is_dir():
        raise OutputError(f"{option} {path} is a directory: give a file name")
    if not path.parent.is_dir():
        raise OutputError(f"{option} {path}: the directory {path.parent} does not exist; "
                          "create it or choose another path")
    if not os.path.lexists(path):
        return
    for other, what in others:
        try:
            same = other.exists() and os.path.samefile(path, other)
        except OSError:
            same = False
        if same:
            raise OutputError(f"{option} {path} is {what}: it was not changed; choose another "
                              "path")
    if path.is_symlink() or not path.is_file():
        raise OutputError(f"{option} {path} is not a regular file (a link, a device, a pipe): "
                          "it was not changed; choose another path")
    if path.stat().st_size and not ours(path):
        raise OutputError(f"{option} {path} exists and is not a file vbatch wrote: it was not "
                          "changed; move it away or choose another path")



def check_log_path(path: Path) -> None:
    """Refuse a server log path that is a symbolic link or not a regular file (a log that is
    there is appended to). Changes nothing."""
    if os.path.lexists(path) and (path.is_symlink() or not path.is_file()):
        raise OutputError(f"{path} (the managed server's log) is not a regular file: it was "
                          "not changed; move it away or choose another -o")


def remove_stale_spools(final: Path) -> None:
    """Remove the copies of streamed input (``OUTPUT.input.PID``) that runs of ``final``
    killed before their end left; a copy whose process still runs is kept."""
    prefix = final.name + ".input."
    for path in final.parent.glob(glob.escape(prefix) + "*"):
        pid = path.name[len(prefix):]
        if not pid.isdigit() or path.is_symlink() or not path.is_file():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except OSError:
            continue
