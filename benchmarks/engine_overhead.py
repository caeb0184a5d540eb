"""Engine overhead: wartune's Trainer epoch against a bare TRADES loop, side by side.

The reference is the textbook loop of TRADES' `trades.py` (attack, CE + β·KL, SGD step)
with nothing else: no λ controller, no per-step trace, no gradient-norm bookkeeping.
Both train the same model, data and attack in this process, one epoch at a time in rounds
of alternating order, on one thread, timed by the CPU time the thread got (`time.thread_time`),
so that other jobs on a shared machine do not blur the ratio; the script prints each side's
median epoch and the ratio. Target: ratio ≤ 1.05 (bookkeeping costs under 5 %).

    python benchmarks/engine_overhead.py [--model wrn10-1] [--rounds 4]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import median_seconds
from reference_trades import reference_trades_step

from wartune.engine.config import TrainConfig
from wartune.engine.data import load_dataset
from wartune.engine.models import create_model
from wartune.engine.trainer import Trainer

CPU = torch.device("cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wrn10-1")
    parser.add_argument("--rounds", type=int, default=4, help="measured epochs per side (after one warm-up epoch)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the thread's own CPU time is the whole cost
    data = load_dataset("digits")
    trainer = Trainer(TrainConfig(model=args.model, lam=6.0, threads=1), data)

    torch.manual_seed(0)
    model = create_model(args.model, 10, 1, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    g = torch.Generator().manual_seed(0)

    def reference_epoch() -> None:
        order = torch.randperm(len(data.train_y), generator=g)
        for start in range(0, len(order), 128):
            idx = order[start : start + 128]
            reference_trades_step(model, optimizer, data.train_x[idx], data.train_y[idx], 0.2, 0.05, 10, 6.0)

    sides = {"wartune": lambda: trainer.train_epoch(), "reference": reference_epoch}
    seconds = median_seconds(sides, args.rounds, CPU, clock=time.thread_time)
    print(f"model {args.model}, training epochs on digits, 1 thread, CPU seconds, median of {args.rounds} alternated rounds")
    print(f"  reference TRADES loop : {seconds['reference']:7.2f} s an epoch")
    print(f"  wartune Trainer       : {seconds['wartune']:7.2f} s an epoch")
    print(f"  ratio wartune / ref   : {seconds['wartune'] / seconds['reference']:7.3f}   (target ≤ 1.05)")


if __name__ == "__main__":
    main()
