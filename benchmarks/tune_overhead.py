"""Ray Tune overhead: a λ grid through `run_search` against the same trials run one after
another with the plain engine, in this process.

Prints both wall times and their ratio. With C concurrent trials on C cores the ideal
ratio is 1/C plus Ray's start-up and per-epoch checkpointing; target: ratio ≤ 1/C + 0.15.

    python benchmarks/tune_overhead.py [--lambdas 1,6,12,18] [--epochs 10] [--cpus 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from wartune.engine.trainer import train
from wartune.tune.spaces import SearchSpace
from wartune.tune.strategies import run_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lambdas", default="1,6,12,18")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--model", default="wrn10-1")
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    lambdas = [float(v) for v in args.lambdas.split(",")]
    space = SearchSpace.model_validate(
        {"name": "bench", "model": args.model, "lambda": lambdas, "epochs": args.epochs, "resources": {"cpu": 1}}
    )

    torch.set_num_threads(1)
    start = time.perf_counter()
    for lam in lambdas:
        train(space.train_config(args.model, lam))
    sequential = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_search(space, Path(out), num_cpus=args.cpus)
        tuned = time.perf_counter() - start

    print(f"{len(lambdas)} trials of {args.model}, {args.epochs} epochs, {args.cpus} CPUs for Ray")
    print(f"  sequential engine runs : {sequential:7.1f} s")
    print(f"  Ray Tune search        : {tuned:7.1f} s")
    print(f"  ratio tune / sequential: {tuned / sequential:7.3f}   (ideal {1 / args.cpus:.2f}; target ≤ {1 / args.cpus + 0.15:.2f})")


if __name__ == "__main__":
    main()
