"""Runs a server command and takes its whole process group down with it.

vbatch starts ``python -m vbatch.servers.guard -- COMMAND...`` as the leader of a new process
group. The guard asks the kernel for SIGTERM when vbatch dies (even by SIGKILL), and on
SIGTERM, SIGINT or SIGHUP it stops the group: SIGTERM, a grace period, then SIGKILL. So the
server and everything it spawned go away with vbatch, whatever happens to vbatch. The server
itself gets SIGTERM from the kernel when the guard dies, so a guard killed by SIGKILL (as Ray
kills the child processes of an actor that exits) does not leave it running either.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

_PR_SET_PDEATHSIG = 1
GRACE_S = float(os.environ.get("VBATCH_SERVER_STOP_GRACE", "10"))


def _prctl() -> Callable[..., int] | None:
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def _die_with_parent(expected_parent: int) -> None:
    prctl = _prctl()
    if prctl is None:
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != expected_parent:
        os.kill(os.getpid(), signal.SIGTERM)


def _group_members(group: int) -> list[int]:
    """Processes of ``group`` other than this one (Linux /proc)."""
    me = os.getpid()
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != b"Z":
            members.append(int(entry))
    return members


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _stop_group(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM every other process of the group, then SIGKILL what is left after the grace."""
    group = os.getpgrp()
    _signal_all(_group_members(group), signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        child.poll()
        if not _group_members(group):
            return
        time.sleep(0.1)
    _signal_all(_group_members(group), signal.SIGKILL)
    child.poll()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m vbatch.servers.guard -- COMMAND...", file=sys.stderr)
        return 2
    _die_with_parent(int(os.environ.get("VBATCH_GUARD_PARENT", os.getppid())))
    prctl = _prctl()
    # In the child between fork and exec: SIGTERM to the server when this guard dies.
    child = subprocess.Popen(argv, preexec_fn=(
        (lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)) if prctl is not None else None))
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            _stop_group(child)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    code = child.wait()
    if not stopping:
        stopping = True
        _stop_group(child)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
