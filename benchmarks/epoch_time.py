"""One CIFAR-shaped training epoch of WRN-34-10 with its per-epoch evaluation: seconds, and the evaluation's share.

Random uint8 data of CIFAR-10's size (50,000 training and 10,000 test images, 3×32×32),
TRADES-10 training at batch 128 and the per-epoch PGD-20 evaluation of the whole test
split, through `Trainer.run_epoch` as a trial runs it. The evaluation is then timed once
more on its own (it is seeded by (seed, epoch), so it repeats the same work) to give its
share of the epoch.

    python benchmarks/epoch_time.py [--model wrn34-10] [--precision auto]
    python benchmarks/epoch_time.py --smoke      # wrn10-0.5 on 256 / 64 images, under a minute
"""

from __future__ import annotations

import argparse
import time

import torch

from wartune.engine.config import TrainConfig
from wartune.engine.data import TensorDataset, dataset_info
from wartune.engine.trainer import Trainer


def cifar_sized(n_train: int, n_test: int, seed: int = 0) -> TensorDataset:
    """Random uint8 images and labels of CIFAR-10's shape and, by default, size."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_train + n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n_train + n_test,), generator=g)
    return TensorDataset(dataset_info("cifar10"), images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wrn34-10")
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true", help="wrn10-0.5, 256 / 64 images, PGD-2 / PGD-2")
    args = parser.parse_args()
    steps = {"attack": {"steps": 10}, "eval": {"steps": 20}}
    if args.smoke:
        args.model, args.train, args.test = "wrn10-0.5", 256, 64
        steps = {"attack": {"steps": 2}, "eval": {"steps": 2}}
    config = TrainConfig(
        model=args.model, dataset="cifar10", lam=6.0, epochs=1, batch_size=128, precision=args.precision,
        compile=args.compile, device=args.device, **steps,
    )
    torch.backends.cudnn.benchmark = True
    trainer = Trainer(config, cifar_sized(args.train, args.test))
    record = trainer.run_epoch()
    start = time.perf_counter()
    trainer.evaluate()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    evaluation = time.perf_counter() - start

    print(f"{args.model}, {args.train} training + {args.test} test images, {trainer.precision} on {trainer.device}"
          f"{' (smoke)' if args.smoke else ''}")
    print(f"  epoch (training + evaluation) : {record.wall_seconds:9.2f} s")
    print(f"  evaluation alone               : {evaluation:9.2f} s")
    print(f"  evaluation's share of the epoch: {evaluation / record.wall_seconds:9.1%}")


if __name__ == "__main__":
    main()
