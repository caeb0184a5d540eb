"""A watchdog that ends a local Ray's processes when the search's driver dies.

`ray.init()` on a laptop starts gcs_server, raylet, agents and workers under the driver.
When the driver is killed (SIGKILL, a script's timeout) most of them follow, but Ray's
dashboard and runtime-env agents were seen alive minutes later, adopted by init. The
driver therefore starts this small process in a session of its own, holding the write end
of a pipe to it, and names the processes `ray.init()` started (the driver's children that
appeared during the call). Every second the watchdog notes those and their descendants
(pid and start time, read from /proc); when the pipe reaches end-of-file, i.e. the driver
is gone however it went, it kills those that are still alive. Nothing else of the
driver's (a notebook's other subprocesses, a test's servers) is touched. Linux only;
elsewhere it does nothing.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

PROC = Path("/proc")
GRACE_S = 1.0  # let Ray's own shutdown go first after a clean exit


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, from /proc/<pid>/stat."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return int(fields[1]), int(fields[19])


def children(pid: int) -> set[int]:
    """The live direct children of `pid`."""
    return set(_table().get(pid, {}))


def _table() -> dict[int, dict[int, int]]:
    """parent pid → {child pid: start time} for every live process."""
    table: dict[int, dict[int, int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            table.setdefault(info[0], {})[int(entry.name)] = info[1]
    return table


def family(roots: set[int]) -> dict[int, int]:
    """The `roots` and every process below them: pid → start time (to tell a reused pid from ours)."""
    table = _table()
    found = {pid: info[1] for pid in roots if (info := _stat(pid)) is not None}
    todo = list(found)
    while todo:
        for pid, started in table.get(todo.pop(), {}).items():
            if pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def kill_remembered(remembered: dict[int, int]) -> int:
    """SIGKILL each remembered process that is still the same process; how many were killed."""
    killed = 0
    for pid, started in remembered.items():
        info = _stat(pid)
        if info is not None and info[1] == started:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def watch(roots: set[int], pipe: int, interval: float = 1.0) -> None:
    """Remember `roots` and their descendants until `pipe` closes, then end the ones left."""
    remembered: dict[int, int] = {}
    while True:
        remembered.update(family(roots))
        ready, _, _ = select.select([pipe], [], [], interval)
        if ready and not os.read(pipe, 4096):
            break
    time.sleep(GRACE_S)
    remembered.pop(os.getpid(), None)
    kill_remembered(remembered)


def start_reaper(roots: set[int]) -> subprocess.Popen | None:
    """Start the watchdog over `roots` (the processes Ray started); None without /proc."""
    if not roots or not (PROC / str(os.getpid()) / "stat").exists():
        return None
    return subprocess.Popen(
        [sys.executable, __file__, *map(str, sorted(roots))],  # a plain script: no torch import
        stdin=subprocess.PIPE,
        start_new_session=True,  # a kill of the driver's process group spares it
        close_fds=True,
    )


def stop_reaper(reaper: subprocess.Popen | None) -> None:
    """After a clean shutdown: close the pipe; the watchdog ends what Ray left and exits."""
    if reaper is not None and reaper.stdin is not None:
        reaper.stdin.close()
        reaper.wait(timeout=30)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the driver, not to us
    watch({int(pid) for pid in sys.argv[1:]}, sys.stdin.fileno())
