"""Ctrl-C, a scheduler's SIGTERM and a closed terminal's SIGHUP: a search stops at a safe point and says so.

Ray Tune stops an experiment gracefully when its SIGINT (or SIGUSR1) handler fires: the loop
ends, every trial's last checkpoint stays, the experiment state is written, and the callbacks'
`on_experiment_end` runs. SIGTERM (what Slurm, Kubernetes and preemption send before SIGKILL)
and SIGHUP would instead end the driver at once, with Ray's native stack dump. So while a
command runs, `on_stop_signals` puts one handler on all three: the first signal asks Ray's
handler to stop (calling it directly, as SIGUSR1 would) and is remembered; a second one stops
at once (`KeyboardInterrupt`), losing nothing that was recorded. Outside `Tuner.fit`, where Ray
has no handler, the first signal stops at once too: no trial is running then.

The command then raises `SearchInterrupted`, which the CLI turns into a short statement, the
command that continues the search, and the shell's exit status (128 + the signal's number).
A module of its own, beside `errors`: the tune layer stops on it, the results layer records
what it says (trials `interrupted`, MLflow runs KILLED), the CLI reports it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from wartune.errors import WartuneError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP (the terminal closed)"}


class SearchInterrupted(WartuneError):
    """A search (or compare) stopped by a signal; what finished is recorded and `--resume` continues it.

    `folder`: the search folder whose tables say what finished; `total`: the trials it plans.
    """

    def __init__(self, signum: int, folder: Path | None = None, total: int | None = None) -> None:
        self.signum, self.folder, self.total = signum, folder, total
        super().__init__(f"stopped by {signal_name(signum)}")

    @property
    def exit_status(self) -> int:
        """The shell's convention: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


_received: list[int] = []  # the stop signals this process got, in order
_active: list[bool] = []  # whether `on_stop_signals` is in force (a stack: nested blocks)
_settled: list[bool] = []  # non-empty once a stopped search loop has returned (`settle`)
_deferred: list[bool] = []  # non-empty while Ray starts (`ray_starting`)


def received() -> int | None:
    """The first stop signal received while `on_stop_signals` was in force (None: none)."""
    return _received[0] if _received else None


def active() -> bool:
    """Whether a command's handler is in force (`ray_session` puts it back after `ray.init`)."""
    return bool(_active)


def signal_name(signum: int) -> str:
    """How the statement names a signal: `Ctrl-C (SIGINT)`, `SIGTERM`, ..."""
    return NAMES.get(signal.Signals(signum), signal.Signals(signum).name)


def _say(text: str) -> None:
    print(f"wartune: {text}", file=sys.stderr, flush=True)


def _handler(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if len(_received) > 1:
        if _settled:  # the search loop is over: its records are being closed, which takes seconds
            return
        _say("stopping now: every epoch recorded so far is kept")
        raise KeyboardInterrupt
    if _deferred:  # Ray is starting: `ray_starting` raises once it stands, so it can shut down whole
        return
    ray_stop = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
    if callable(ray_stop):  # inside Tuner.fit: Ray's graceful stop (its handler for SIGUSR1)
        _say(f"{signal_name(signum)}: stopping the search at a safe point (again to stop at once)")
        ray_stop(signal.SIGUSR1, frame)
        return
    raise KeyboardInterrupt


@contextmanager
def ray_starting() -> Iterator[None]:
    """Around `ray.init`: a stop signal waits until Ray stands (then the block raises
    KeyboardInterrupt, and Ray shuts down whole), and Ray's SIGTERM handlers (Python's ends the
    process at once, the core worker's native one dumps a stack and aborts) give way to the
    command's once it stands."""
    import ray._private.utils as ray_utils

    if not _active:
        yield
        return
    own = ray_utils.set_sigterm_handler
    ray_utils.set_sigterm_handler = lambda handler: None
    _deferred.append(True)
    try:
        yield
    finally:
        _deferred.pop()
        ray_utils.set_sigterm_handler = own
        install()  # Ray's core worker put its native SIGTERM handler (a stack dump, then abort) in place
    if _received:
        raise KeyboardInterrupt


def settle() -> None:
    """The stopped search loop has returned and its records are closed: from here to the end of
    the command (Ray shutting down) a further stop signal is ignored, since stopping sooner would
    save nothing and could leave Ray's processes half ended."""
    _settled.append(True)


def install() -> None:
    """Put the handler on SIGINT, SIGTERM and SIGHUP (again after `ray.init`, which sets its own
    SIGTERM handler); Ray Tune is told to leave SIGINT to it."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handler)


@contextmanager
def on_stop_signals() -> Iterator[None]:
    """The handler in force for the block (on the main thread only), the previous ones after it."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    if not _active:
        _received.clear()
        _settled.clear()
    _active.append(True)
    install()
    try:
        yield
    finally:
        _active.pop()
        for signum, handler in before.items():
            signal.signal(signum, handler)
