"""One run per output at a time: an exclusive lock beside OUTPUT for the whole run."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from vbatch.errors import OutputError, OutputLockedError

__all__ = ["OutputLock", "lock_path"]


def lock_path(output: Path) -> Path:
    """Where the lock of ``output`` lives: beside the file's real name, so that a run on a
    symbolic link to another run's output meets that run's lock."""
    real = output.resolve()
    return real.with_name(real.name + ".lock")


class OutputLock:
    """``flock`` on ``OUTPUT.lock`` from entering until leaving, holding this process's PID.

    A second run on the same output (from any process on this machine, or on a shared
    file system that supports ``flock``) gets :class:`OutputLockedError` naming the
    holder's PID. The lock file is removed on leaving; a run that finds the file but no
    lock on it (its holder was killed) takes it over.
    """

    def __init__(self, output: Path):
        self.output = output
        self.path = lock_path(output)
        self._fd: int | None = None
        self._held: int | None = None

    def __enter__(self) -> OutputLock:
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputLockedError(
                    f"{self.output} is being written by another vbatch run (PID {holder}): "
                    "wait for it to end, or choose another -o"
                ) from None
            # The holder before us may have removed the file after we opened it: then
            # our lock is on a file nobody else will look at, so start again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        found = os.pread(fd, 64, 0)
        if found.strip() and not found.strip().isdigit():
            os.close(fd)
            raise OutputError(
                f"{self.path} exists and is not vbatch's lock file (it holds no process id): "
                "it was not changed; move it away, or choose another -o")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise OutputError(
                f"cannot write the lock {self.path} ({exc.strerror}): nothing was sent; free "
                "some space or fix the file system, then run the same command again") from None
        self._fd = fd
        self._hold_output()
        return self

    def _hold_output(self) -> None:
        """Lock the output file itself too, when it exists: a run on another name of the
        same file (a hard link) holds another lock file, but not another file."""
        try:
            held = os.open(self.output, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(held)
            self.__exit__(None, None, None)
            raise OutputLockedError(
                f"{self.output} is being written by another vbatch run under another name "
                "(a hard link to the same file): wait for it to end, or choose another -o"
            ) from None
        except OSError:
            os.close(held)
            return
        self._held = held

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except FileNotFoundError:
            raise OutputError(
                f"cannot write {self.output}: the directory {self.output.parent} does not "
                "exist; create it or choose another -o"
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OutputError(
                    f"{self.path} is a symbolic link, not vbatch's lock file; it was not "
                    "changed: remove it, or choose another -o") from None
            raise OutputError(
                f"cannot write beside {self.output} ({exc.strerror}): check the directory's "
                "permissions and free space, or choose another -o"
            ) from None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._held is not None:
            os.close(self._held)
            self._held = None
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
