"""One CIFAR-10-sized training epoch of WRN-34-10 with its per-epoch evaluation: seconds, and the evaluation's share.

Synthetic CIFAR-10 (`synthetic-cifar10`: random uint8 data of CIFAR-10's size, 50,000
training and 10,000 test images), TRADES-10 training at batch 128 and the per-epoch PGD-20
evaluation (CIFAR-10's 1,000-example subset), through `Trainer.run_epoch` as a trial runs it,
with the settings a trial gets by default (`precision: auto`, `graphs: auto`). A first, short
epoch warms up (cuDNN's choices, the graph's capture, compilation) and is not counted. The
evaluation is then timed once more on its own (seeded by (seed, epoch), it repeats the same
work) to give its share of the epoch. Target (H200, WRN-34-10): ≤ 50 s.

    python benchmarks/epoch_time.py [--model wrn34-10] [--precision auto] [--graphs auto]
    python benchmarks/epoch_time.py --smoke      # wrn10-0.5 on 256 / 64 images, under a minute
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import device_name, record, sync, synthetic_slice

from wartune.engine.config import TrainConfig
from wartune.engine.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wrn34-10")
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--graphs", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="append the figures as one JSON line")
    parser.add_argument("--smoke", action="store_true", help="wrn10-0.5, 256 / 64 images, PGD-2 / PGD-2")
    args = parser.parse_args()
    steps = {"attack": {"steps": 10}, "eval": {"steps": 20}}
    if args.smoke:
        args.model, args.train, args.test = "wrn10-0.5", 256, 64
        steps = {"attack": {"steps": 2}, "eval": {"steps": 2}}
    config = TrainConfig(
        model=args.model, dataset="synthetic-cifar10", lam=6.0, epochs=2, batch_size=128, precision=args.precision,
        graphs=args.graphs, compile=args.compile, device=args.device, **steps,
    )  # fmt: skip
    torch.backends.cudnn.benchmark = True
    data = synthetic_slice(args.train, args.test)
    trainer = Trainer(config, data)
    warm = Trainer(config, synthetic_slice(128 * 6, args.test))  # 6 steps: 3 warm-up, capture, replays
    warm.train_epoch()
    warm.evaluate()
    del warm
    sync(trainer.device)
    record_ = trainer.run_epoch()
    start = time.perf_counter()
    trainer.evaluate()
    sync(trainer.device)
    evaluation = time.perf_counter() - start

    print(f"{args.model}, {args.train} training + {args.test} test images, {trainer.precision}, graphs {trainer.graph_mode} "
          f"on {device_name(trainer.device)}{' (smoke)' if args.smoke else ''}")
    print(f"  epoch (training + evaluation) : {record_.wall_seconds:9.2f} s   (target <= 50 s: WRN-34-10, H200)")
    print(f"  evaluation alone               : {evaluation:9.2f} s")
    print(f"  evaluation's share of the epoch: {evaluation / record_.wall_seconds:9.1%}")
    print(f"  training images per second     : {args.train / (record_.wall_seconds - evaluation):9.1f}")
    record(args.json, "epoch_time", {
        "device": device_name(trainer.device), "smoke": args.smoke, "model": args.model, "precision": trainer.precision,
        "graphs": trainer.graph_mode, "epoch_seconds": record_.wall_seconds, "eval_seconds": evaluation,
    })  # fmt: skip


if __name__ == "__main__":
    main()
