"""Per-step rows: wartune's append-per-epoch writes against the old whole-table rewrite.

`ParquetSink` writes each trial's epoch trace (one row per training step) to its own file
in the `steps.parquet` folder. The reference is what it did before: keep every step row
in memory and rewrite the whole `steps.parquet` after every report, so the cost of a
write grows with the epoch and a search's total grows quadratically. Both run here, side
by side, on synthetic reports of the paper's CIFAR scale (20 trials × 391 steps, 100
epochs = 782,000 step rows). The script prints the cost of one trial's report at the
first and the last epoch for each (its steps write, and the whole report), and the
ratios. Target: wartune's steps write last/first ≤ 2 (constant per epoch, up to timing
noise), while the reference's grows about linearly with the epoch.

    python benchmarks/steps_append.py [--trials 20] [--steps 391] [--epochs 100] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from wartune.results.sinks import ParquetSink
from wartune.results.store import EPOCH_SCHEMA, STEP_SCHEMA, STEPS_FILE, write_table
from wartune.results.trials import TrialMeta


def meta(trial_id: str, epochs: int) -> TrialMeta:
    return TrialMeta(
        search="bench", trial_id=trial_id, strategy="grid", model="wrn34-1", width=1.0, dataset="cifar10",
        objective="trades", eps=8 / 255, seed=0, epochs_planned=epochs, lambda_setting=6.0, zeta_from=None,
        zeta_used=None, cpus=1.0, gpus=0.25,
    )  # fmt: skip


def report(epoch: int, steps: int) -> dict[str, Any]:
    """One epoch's result as the trainable reports it: metrics plus the per-step trace."""
    result: dict[str, Any] = {name: 0.5 for name in EPOCH_SCHEMA.names}
    result.update(epoch=epoch, val_examples=1_000)
    result["steps"] = {"l_nat": [1.0 + i * 1e-4 for i in range(steps)], "l_rob": [0.05] * steps, "lambda_t": [6.0] * steps}
    return result


class Append(ParquetSink):
    """wartune's sink, timing its steps write apart from the small tables' rewrite."""

    steps_seconds = 0.0

    def _write_steps(self, rows: list[dict[str, Any]], trial_id: str, epoch: int) -> None:
        start = time.perf_counter()
        super()._write_steps(rows, trial_id, epoch)
        self.steps_seconds = time.perf_counter() - start


class WholeRewrite(Append):
    """The reference: the sink as it was, every step row kept and steps.parquet rewritten per report.

    With `quiet` it only updates its state: a report's cost depends on the state alone, so
    the untimed reports skip the disk (else the reference alone would run for an hour).
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.steps: dict[tuple[str, int, int], dict[str, Any]] = {}
        self.quiet = False

    def _write_steps(self, rows: list[dict[str, Any]], trial_id: str, epoch: int) -> None:
        start = time.perf_counter()
        self.steps.update({(trial_id, epoch, r["step"]): r for r in rows})
        if not self.quiet:
            ordered = sorted(self.steps.values(), key=lambda r: (r["trial_id"], r["epoch"], r["step"]))
            self.folder.mkdir(parents=True, exist_ok=True)
            write_table(ordered, STEP_SCHEMA, self.folder / STEPS_FILE)
        self.steps_seconds = time.perf_counter() - start

    def _write(self) -> None:
        if not self.quiet:
            super()._write()


def run(sink: Append, metas: list[TrialMeta], epochs: int, steps: int) -> list[tuple[float, float]]:
    """Report every epoch of every trial; (steps write, whole report) seconds of the last
    trial's report at the first and at the last epoch."""
    timed: list[tuple[float, float]] = []
    for epoch in range(1, epochs + 1):
        for m in metas:
            is_timed = epoch in (1, epochs) and m is metas[-1]
            if isinstance(sink, WholeRewrite):
                sink.quiet = not is_timed
            start = time.perf_counter()
            sink.on_epoch(m, report(epoch, steps))
            if is_timed:
                timed.append((sink.steps_seconds, time.perf_counter() - start))
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--steps", type=int, default=391, help="training steps per epoch (CIFAR-10, batch 128: 391)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--smoke", action="store_true", help="a small size (4 trials × 50 steps, 10 epochs) to check it runs")
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.steps, args.epochs = 4, 50, 10
    metas = [meta(f"{i:08x}_{i:05d}", args.epochs) for i in range(args.trials)]
    total = args.trials * args.steps * args.epochs
    print(f"{args.trials} trials × {args.steps} steps × {args.epochs} epochs = {total:,} step rows", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        wartune = run(Append(Path(tmp) / "append"), metas, args.epochs, args.steps)
        reference = run(WholeRewrite(Path(tmp) / "rewrite"), metas, args.epochs, args.steps)
    print(f"one trial's report, ms          epoch 1   epoch {args.epochs:<6} last/first")
    for what, i in (("steps.parquet write", 0), ("whole report", 1)):
        for label, (first, last) in (("wartune, append", wartune), ("reference, rewrite", reference)):
            print(f"{what:20} {label:19} {1e3 * first[i]:8.1f} {1e3 * last[i]:11.1f} {last[i] / first[i]:11.2f}")
    print(
        f"reference / wartune at epoch {args.epochs}: steps write {reference[1][0] / wartune[1][0]:.0f}×, "
        f"whole report {reference[1][1] / wartune[1][1]:.1f}×"
    )
    print("(a whole report also rewrites epochs.parquet and trials.parquet, single files of one row per epoch / trial)")

if __name__ == "__main__":
    main()
