"""Engine overhead: wartune's Trainer epoch against a bare TRADES loop, side by side.

The reference is the textbook loop of TRADES' `trades.py` (attack, CE + β·KL, SGD step)
with nothing else: no λ controller, no per-step trace, no gradient-norm bookkeeping.
Both run the same model, data, attack and batch order in this process; the script prints
their times and the ratio. Target: ratio ≤ 1.10 (bookkeeping costs under 10 %).

    python benchmarks/engine_overhead.py [--model wrn10-1] [--epochs 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from reference_trades import reference_trades_step

from wartune.engine.config import TrainConfig
from wartune.engine.data import load_dataset
from wartune.engine.models import create_model
from wartune.engine.trainer import Trainer


def reference_epoch(model, optimizer, x_all, y_all, order, batch, eps, step, steps, beta) -> None:
    """TRADES' training loop, written plainly."""
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        x, y = x_all[idx], y_all[idx]
        reference_trades_step(model, optimizer, x, y, eps, step, steps, beta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wrn10-1")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("digits")
    config = TrainConfig(model=args.model, lam=6.0, epochs=args.epochs, threads=args.threads)

    trainer = Trainer(config, data)
    start = time.perf_counter()
    for _ in range(args.epochs):
        trainer.train_epoch()
    ours = time.perf_counter() - start

    torch.manual_seed(0)
    model = create_model(args.model, 10, 1, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(args.epochs):
        order = torch.randperm(len(data.train_y), generator=g)
        reference_epoch(model, optimizer, data.train_x, data.train_y, order, 128, 0.2, 0.05, 10, 6.0)
    reference = time.perf_counter() - start

    print(f"model {args.model}, {args.epochs} training epochs on digits, {args.threads} thread(s)")
    print(f"  reference TRADES loop : {reference:7.2f} s")
    print(f"  wartune Trainer       : {ours:7.2f} s")
    print(f"  ratio wartune / ref   : {ours / reference:7.3f}   (target ≤ 1.10)")


if __name__ == "__main__":
    main()
