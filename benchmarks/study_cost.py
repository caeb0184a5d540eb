"""What a WAR study's strategies cost in compute: the λ grid against WAR with its calibration.

A study (`wartune compare --space war_study`) runs, on each target width, the λ grid (L λ × S
seeds) and WAR (S seeds per controller), after a calibration of L × S thin-net trials that is
counted once for all widths. `compare` records each trial's wall-clock seconds, which a shared
machine's load inflates unevenly: in the first study the same untuned trial cost 73 to 192 s
from seed to seed. This measures the work itself, in one process: each model's epoch (training
plus the per-epoch evaluation) and its final evaluation on the whole test split, every side of
every model warmed up and then alternated in rounds (median round), on a CPU in thread time (the CPU time
the trial's one thread got; a trial runs on `resources.cpu` threads, 1 in the studies). Then
the study's costs, with a trial = epochs × epoch + final evaluation:

    grid(width) = L·S·trial(width)     WAR(width) = S·trial(width)     calibration = L·S·trial(thin)
    over two widths:  (calibration + Σ WAR) / Σ grid           (issue 19's goal: at most 1/3)

It prints each target's ratio (the calibration all its own) and every pair's. With `--stack K`
every strategy stacks what it can (`engine/stacked_trainer.py`): the grid's and the
calibration's L·S trials of a model in stacks of K, WAR's S seeds in one; a trial then costs
its share of its stack's epoch.

    python benchmarks/study_cost.py --space war_study --models wrn10-2,wrn10-4
    python benchmarks/study_cost.py --space war_study_mnist --data-dir data --models mlp-256,mlp-512
    python benchmarks/study_cost.py --space war_study --models wrn10-1,wrn10-2 --stack 6   # trials stacked by 6
    python benchmarks/study_cost.py --space war_study --smoke     # 2 epochs, 1 round: checks the script
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import torch
from common import Side, device_name, median_seconds, record

from wartune.engine.config import TrainConfig
from wartune.engine.data import TensorDataset, load_dataset
from wartune.engine.stacked_trainer import StackedTrainer
from wartune.engine.trainer import Trainer
from wartune.tune.spaces import load_space

GOAL = 1 / 3


def model_sides(trainer: Trainer, name: str) -> dict[str, Side]:
    """A model's measured work, as a trial runs it: an epoch (`run_epoch`: training, the lr step,
    the per-epoch evaluation on the validation split, the best weights kept), and the final
    `evaluate_test`, the one reading of the whole test split."""
    return {f"{name} epoch": trainer.run_epoch, f"{name} final": trainer.evaluate_test}


def war_over_grid(trial: dict[str, float], thin: str, targets: list[str], lambdas: int, seeds: int,
                  war_trial: dict[str, float] | None = None) -> float:  # fmt: skip
    """WAR's cost over `targets` (the calibration once, S runs per target) against the grid's
    (L·S per target); `war_trial` prices a WAR run where it differs from a grid trial (stacked
    by seed rather than by λ and seed)."""
    war_trial = war_trial or trial
    war = lambdas * seeds * trial[thin] + seeds * sum(war_trial[m] for m in targets)
    return war / (lambdas * seeds * sum(trial[m] for m in targets))


def stack_sides(config: Callable[[int], TrainConfig], data: TensorDataset, name: str, size: int) -> dict[str, Side]:
    """A stack of `size` of a model's trials (λ and seed differing), its epoch as a stack runs it."""
    stack = StackedTrainer([Trainer(config(i), data) for i in range(size)])
    return {f"{name} stack {size}": stack.run_epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="war_study", help="a compare space (shipped name or YAML path)")
    parser.add_argument("--models", help="comma-separated targets instead of the space's own")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="append the figures as one JSON line")
    parser.add_argument("--smoke", action="store_true", help="2 epochs of the space's models, 1 round")
    parser.add_argument("--stack", type=int, default=1,
                        help="trials of one model train as stacks of up to K (the grid's and the calibration's "
                             "L·S trials, WAR's S seeds); 1: one by one")  # fmt: skip
    args = parser.parse_args()
    overrides = {"data_dir": args.data_dir} if args.data_dir else {}
    space = load_space(args.space, overrides)
    targets = args.models.split(",") if args.models else space.models
    rounds, epochs = (1, 2) if args.smoke else (args.rounds, space.epochs)
    lambdas, seeds = len(space.lambdas), len(space.seed_values)

    data = load_dataset(space.dataset, space.data_dir)  # each Trainer takes the space's subset of it
    models = [space.thin_model, *targets]
    trainers = [Trainer(space.train_config(m, space.lambdas[0], args.device), data) for m in models]
    device = trainers[0].device
    sides = {name: side for m, t in zip(models, trainers, strict=True) for name, side in model_sides(t, m).items()}
    grid_k, war_k = min(args.stack, lambdas * seeds), min(args.stack, seeds)
    for m in models:
        def config(i: int, m: str = m) -> TrainConfig:
            return space.train_config(m, space.lambdas[i % lambdas], args.device).model_copy(update={"seed": i})

        for k in sorted({grid_k, war_k} - {1}):
            sides.update(stack_sides(config, data, m, k))
    clock = time.thread_time if device.type == "cpu" else time.perf_counter  # one thread per trial on a CPU
    seconds = median_seconds(sides, rounds, device, clock=clock)

    def member_epoch(m: str, k: int) -> float:
        return seconds[f"{m} epoch"] if k == 1 else seconds[f"{m} stack {k}"] / k

    trial: dict[str, float] = {}
    war_trial: dict[str, float] = {}
    for m in models:
        final = seconds[f"{m} final"]
        trial[m] = epochs * member_epoch(m, grid_k) + final
        war_trial[m] = epochs * member_epoch(m, war_k) + final
        stacked = f"   stacked by {grid_k}: epoch {member_epoch(m, grid_k):6.2f} s a trial" if grid_k > 1 else ""
        print(f"  {m:12s} epoch {seconds[f'{m} epoch']:7.2f} s{stacked}   final evaluation {final:6.2f} s   trial {trial[m]:8.1f} s")

    calibration = lambdas * seeds * trial[space.thin_model]
    print(f"{space.name}: {lambdas} λ x {seeds} seeds, {epochs} epochs, on {device_name(device)}"
          f"{' (smoke)' if args.smoke else ''}; calibration on {space.thin_model}: {calibration:.0f} s")  # fmt: skip
    for m in targets:
        own = war_over_grid(trial, space.thin_model, [m], lambdas, seeds, war_trial)
        print(f"  {m:12s} grid {lambdas * seeds * trial[m]:8.0f} s   WAR {seeds * war_trial[m]:6.0f} s + calibration = {own:.3f} of it")
    pairs = combinations(targets, 2)
    ratios = {",".join(pair): war_over_grid(trial, space.thin_model, list(pair), lambdas, seeds, war_trial) for pair in pairs}
    for pair, ratio in ratios.items():
        print(f"  over {pair.replace(',', ' + ')}: WAR / grid = {ratio:.3f}, calibration counted once (goal <= {GOAL:.3f})")
    record(args.json, "study_cost", {
        "device": device_name(device), "smoke": args.smoke, "space": space.name, "thin": space.thin_model,
        "targets": targets, "stack": args.stack, "trial_seconds": trial, "war_trial_seconds": war_trial,
        "calibration_s": calibration, "ratio_over_pairs": ratios,
    })  # fmt: skip


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    main()
