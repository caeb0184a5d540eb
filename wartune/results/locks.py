"""Advisory file locks: one writer at a time for a search folder or the ζ registry.

`flock` locks belong to the open file, so the kernel drops them when the process ends,
however it ends (a SIGKILL, a lost node): a killed search never leaves a stale lock. The
lock file keeps a line saying who holds it, so a refused search can name the running one.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from wartune.errors import WartuneError


class LockedError(WartuneError):
    """Another process holds the lock; the message names it."""


def _holder_line() -> str:
    when = datetime.now(UTC).isoformat(timespec="seconds")
    command = " ".join(sys.argv)[:300]
    return f"pid {os.getpid()} on {socket.gethostname()} since {when}: {command}"


@contextmanager
def exclusive(path: Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) for the block.

    With `wait`, block until it is free (the ζ registry's short upserts); without, refuse at
    once with a `LockedError` naming `what` and the holder (a second search of one name).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LockedError(f"{what} is already running ({holder})") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(_holder_line() + "\n")
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_unlocked(path: Path, what: str) -> None:
    """Refuse now (naming the holder) if `path` is locked; takes nothing."""
    if path.exists():
        with exclusive(path, what):
            pass
