"""The search this driver runs now: where its folder is, and which extra sinks it feeds.

Ray pickles the Tuner's callbacks and search algorithm into the experiment (`ray/tune/`), and
`Tuner.restore` rebuilds them from there; nothing of the resuming driver reaches them. A
search folder outlives its disk and its machine (scratch to project storage, one machine to
another), so the wartune objects Ray pickles hold no path and no sink: `run_search` binds the
search it runs (`running`) around building or restoring the Tuner and fitting it, and the
sink callback and the Optuna study's storage look it up (`current`) when they start or are
unpickled. The MLflow sinks are the resuming command's own, so a resumed search logs where
its command says. One driver runs one search at a time (compare runs its parts one after
another); the binding is a stack only so that a nested call cannot leave a stale one behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunningSearch:
    """What a running search's pickled objects need from the driver that runs it now."""

    folder: Path  # the search folder, absolute, where it is now
    sinks: tuple[Callable[[Path], Any], ...] = ()  # this command's extra sink factories (MLflow)
    ray_experiment: Path | None = None  # Ray's experiment folder when it is local (its state is backed up)
    title: str | None = None  # what the progress display heads the search with ("compare c, part 2 of 3: …")


_RUNNING: list[RunningSearch] = []


@contextmanager
def running(search: RunningSearch) -> Iterator[RunningSearch]:
    """Bind `search` for the block: what Ray restores or starts inside it belongs to it."""
    _RUNNING.append(search)
    try:
        yield search
    finally:
        _RUNNING.remove(search)


def current() -> RunningSearch:
    """The search being run; a pickled wartune object restored outside `running` is a bug."""
    if not _RUNNING:
        raise RuntimeError("no wartune search is running in this process: bind one with running()")
    return _RUNNING[-1]
