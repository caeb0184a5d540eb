"""Does bf16 cost robustness? fp32 against bf16 training over seeds, on the embedded digits data.

The same run (WRN-10-1, TRADES λ = 3, 10 epochs, ε 0.2, the digits defaults of `lambda_grid`)
at `precision: fp32` and `precision: bf16` for each seed; prints each run's best-epoch robust and
natural accuracy on the whole test split, the per-seed differences, and their mean ± sd. On a
GPU bf16 runs under CUDA autocast; on a CPU under CPU autocast (bf16 operands, fp32
accumulation, as on the GPU, but other kernels), which is slow and only a proxy for the GPU's.

    python benchmarks/precision_robustness.py [--seeds 0 1 2] [--epochs 10] [--model wrn10-1]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from common import device_name, record

from wartune.engine.config import TrainConfig
from wartune.engine.data import load_dataset
from wartune.engine.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wrn10-1")
    parser.add_argument("--lam", type=float, default=3.0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="append the figures as one JSON line")
    args = parser.parse_args()
    data = load_dataset("digits")
    results: dict[str, dict[int, tuple[float, float]]] = {"fp32": {}, "bf16": {}}
    for seed in args.seeds:
        for precision in results:
            config = TrainConfig(model=args.model, lam=args.lam, epochs=args.epochs, seed=seed, precision=precision,
                                 device=args.device, threads=args.threads)  # fmt: skip
            trainer = Trainer(config, data)
            trainer.fit()
            best = trainer.evaluate_test().metrics
            results[precision][seed] = (best.rob_acc, best.nat_acc)
            print(f"seed {seed} {precision}: robust {best.rob_acc:.2%} natural {best.nat_acc:.2%} "
                  f"(epoch {trainer.best_epoch}, {trainer.device})", flush=True)  # fmt: skip
    diffs = [results["bf16"][s][0] - results["fp32"][s][0] for s in args.seeds]
    mean = {p: statistics.mean(r[s][0] for s in args.seeds) for p, r in results.items()}
    sd = {p: statistics.stdev(r[s][0] for s in args.seeds) if len(args.seeds) > 1 else 0.0 for p, r in results.items()}
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu"))
    print(f"{args.model}, λ {args.lam:g}, {args.epochs} epochs on digits, seeds {args.seeds}, {device_name(device)}")
    for p in results:
        print(f"  {p}: robust {mean[p]:.2%} ± {sd[p]:.2%}")
    spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    print(f"  bf16 − fp32, robust, per seed: {', '.join(f'{d * 100:+.2f}' for d in diffs)} points; "
          f"mean {statistics.mean(diffs) * 100:+.2f} ± {spread * 100:.2f}")
    record(args.json, "precision_robustness", {"device": device_name(device), "model": args.model,
                                               "fp32": mean["fp32"], "bf16": mean["bf16"], "diffs": diffs})  # fmt: skip


if __name__ == "__main__":
    main()
