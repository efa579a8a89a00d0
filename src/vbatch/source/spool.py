"""Input that can be read only once (``-`` for stdin, a pipe, a FIFO, ``<(...)``).

vbatch reads its input twice (the check pass, then the run), and a resume reads it again:
such an input is copied once to ``OUTPUT.input.PID`` beside the output
(:class:`~vbatch.settings.OutputPaths`; a name of this process's own, so that no file is
overwritten), read from there, and the copy is removed when the run ends (a copy a killed run
left is removed by the next run of the same output).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from vbatch.errors import OutputError

__all__ = ["STDIN", "needs_spool", "spooled"]

STDIN = "-"


def needs_spool(path: Path) -> bool:
    """Whether ``path`` is stdin or something other than a regular file or a directory."""
    if str(path) == STDIN:
        return True
    try:
        mode = os.stat(path).st_mode
        return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
    except OSError:
        return False


@contextlib.contextmanager
def spooled(given: Path, spool: Path) -> Iterator[None]:
    """Copy ``given`` (stdin for ``-``) to ``spool`` for the time of the block, then remove
    the copy."""
    try:
        with contextlib.ExitStack() as stack:
            source = (sys.stdin.buffer if str(given) == STDIN
                      else stack.enter_context(open(given, "rb")))
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            with os.fdopen(os.open(spool, flags, 0o600), "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
    except OSError as exc:
        spool.unlink(missing_ok=True)
        raise OutputError(f"cannot copy {given} to {spool} ({exc.strerror}): "
                          "free some space or choose another -o") from None
    except BaseException:
        spool.unlink(missing_ok=True)
        raise
    try:
        yield
    finally:
        spool.unlink(missing_ok=True)
