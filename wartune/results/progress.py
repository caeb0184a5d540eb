"""A live progress display of a search (rich): one bar per trial plus the total.

On a terminal the bars update as epochs finish, the total with the time left; when output is
not a terminal (CI, a pipe, a log file) it prints one line per finished epoch instead, each
with the search's count of epochs done and its time left, so a log reads as the bars do. The
display opens with a heading line naming the search (a compare's part: which, and of how
many), and each trial's line names its strategy, as a compare's part mixes several. A search
that repeats each setting with several seeds names each trial's seed, or its repeats would
read alike.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from wartune.results.trials import TrialMeta, trial_label

FIRST_BATCH_S = 1.0  # epochs reported within this long of the first one make the first batch


def duration_text(seconds: float) -> str:
    """`45 s`, `3 min 20 s`, `2 h 05 min`: a time left as a log line says it."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class ProgressSink:
    """Shows trials and epochs as they run."""

    def __init__(self, total_trials: int | None, epochs: int, console: Console | None = None, show_seed: bool = False,
                 title: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.show_seed = show_seed
        self.console = console or Console(stderr=True, width=None if sys.stderr.isatty() else 160)
        self.epochs = epochs
        self.live = self.console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.live,
        )
        self.total = total_trials * epochs if total_trials else None
        self.overall = self.progress.add_task("all trials (epochs)", total=self.total, status="")
        self.tasks: dict[str, Any] = {}
        self.done: set[tuple[str, int]] = set()
        self.trained: dict[str, int] = {}  # trial id -> its epochs done
        self.ended: set[str] = set()  # trials whose unrun epochs left the total
        # the pace: epochs this run trained (a resume re-reports others) since the first batch of them,
        # which arrives after the workers started and the data loaded (not part of an epoch's cost)
        self.clock, self.first_at, self.new, self.base = clock, None, 0, 0
        if title:
            trials = f"{total_trials} trials × {epochs} epochs" if total_trials else f"{epochs} epochs a trial"
            self.console.print(f"wartune: {title}: {trials}", highlight=False)
        self.progress.start()

    def on_epoch(self, meta: TrialMeta, result: dict[str, Any]) -> None:
        trial_id, label = meta.trial_id, self.label(meta)
        if trial_id not in self.tasks:
            self.tasks[trial_id] = self.progress.add_task(label, total=self.epochs, status="")
            if result.get("resume_note"):  # a newer checkpoint could not be read
                self.console.print(f"[yellow]trial {label}: {result['resume_note']}[/yellow]")
        if result.get("error"):
            return
        epoch = int(result["epoch"])
        status = (
            f"val nat {result['val_nat_acc']:.1%}  rob {result['val_rob_acc']:.1%}  "
            f"stab {result['val_stability']:.1%}  λ {result['lambda_last']:.2f}"
        )
        self.progress.update(self.tasks[trial_id], completed=epoch, status=status)
        if (trial_id, epoch) not in self.done:
            self.done.add((trial_id, epoch))
            self.trained[trial_id] = max(self.trained.get(trial_id, 0), epoch)
            if not result.get("resumed_from_epoch") or epoch > int(result["resumed_from_epoch"]):
                self.new += 1
                now = self.clock()
                if self.first_at is None:
                    self.first_at = now
                if now - self.first_at < FIRST_BATCH_S:  # the first batch (a stack's members arrive together)
                    self.base = self.new
            self.progress.update(self.overall, advance=1)
        if not self.live:
            self.console.print(f"[{self.count()}] {meta.strategy} {label}  epoch {epoch}/{self.epochs}  {status}", highlight=False)

    def count(self) -> str:
        """`12/40 epochs, 3 min 20 s left`: the search's epochs done, and the time left at this run's
        pace since its first batch of epochs (none before a second batch)."""
        done = len(self.done)
        if self.total is None:
            return f"{done} epochs"
        left = ""
        if self.first_at is not None and self.new > self.base and done < self.total:
            pace = (self.clock() - self.first_at) / (self.new - self.base)
            left = f", {duration_text(pace * (self.total - done))} left"
        return f"{done}/{self.total} epochs{left}"

    def on_trial_end(self, meta: TrialMeta, status: str, error: str | None) -> None:
        skipped = self.epochs - self.trained.get(meta.trial_id, 0)  # stopped by ASHA, or failed: never trained
        if self.total is not None and skipped > 0 and status != "interrupted" and meta.trial_id not in self.ended:
            self.ended.add(meta.trial_id)
            self.total -= skipped
            self.progress.update(self.overall, total=self.total)
        if status == "interrupted":
            self.console.print(f"[yellow]trial {self.label(meta)} interrupted: its recorded epochs are kept[/yellow]")
        elif status != "finished" or error:
            self.console.print(f"[red]trial {self.label(meta)} {status}: {error}[/red]")

    def label(self, meta: TrialMeta) -> str:
        return trial_label(meta.as_dict(), seed=self.show_seed)

    def close(self) -> None:
        self.progress.stop()
