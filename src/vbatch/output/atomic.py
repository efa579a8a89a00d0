"""Replacing a file whole: a temporary file beside it, renamed over it only when complete."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["replaced"]


@contextlib.contextmanager
def replaced(path: Path, suffix: str) -> Iterator[BinaryIO]:
    """A file to write the new content of ``path`` to.

    When the block ends normally the file is fsynced, given ``path``'s permissions (a new
    file gets the usual ones) and renamed over it; when it raises (a full disk, an interrupt),
    it is removed and ``path`` is left as it was. A crash leaves either the old file or the new
    one.
    """
    tmp = path.with_name(path.name + suffix)
    try:
        with open(tmp, "wb") as target:
            yield target
            target.flush()
            os.fsync(target.fileno())
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
