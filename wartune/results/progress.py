"""A live progress display of a search (rich): one bar per trial plus the total.

On a terminal the bars update as epochs finish; when output is not a terminal (CI, a
pipe, a log file) it prints one line per finished epoch instead. A search that repeats each
setting with several seeds names each trial's seed, or its repeats would read alike.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from wartune.results.trials import TrialMeta, trial_label


class ProgressSink:
    """Shows trials and epochs as they run."""

    def __init__(self, total_trials: int | None, epochs: int, console: Console | None = None, show_seed: bool = False) -> None:
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
            console=self.console,
            disable=not self.live,
        )
        total = total_trials * epochs if total_trials else None
        self.overall = self.progress.add_task("all trials (epochs)", total=total, status="")
        self.tasks: dict[str, Any] = {}
        self.done: set[tuple[str, int]] = set()
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
            self.progress.update(self.overall, advance=1)
        if not self.live:
            self.console.print(f"{label}  epoch {epoch}/{self.epochs}  {status}", highlight=False)

    def on_trial_end(self, meta: TrialMeta, status: str, error: str | None) -> None:
        if status == "interrupted":
            self.console.print(f"[yellow]trial {self.label(meta)} interrupted: its recorded epochs are kept[/yellow]")
        elif status != "finished" or error:
            self.console.print(f"[red]trial {self.label(meta)} {status}: {error}[/red]")

    def label(self, meta: TrialMeta) -> str:
        return trial_label(meta.as_dict(), seed=self.show_seed)

    def close(self) -> None:
        self.progress.stop()
