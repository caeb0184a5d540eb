"""One trial as a plain process, without Ray: the ceiling that packed trials are held against.

Two modes, both on a synthetic data set (CIFAR-10's by default) with the settings a trial gets (`precision: auto`,
`graphs: auto`):
- `trial`: what a search trial does, `Trainer.fit()` and then the best epoch's full-split
  evaluation; prints {"seconds": wall from the start of the process's work};
- `steps`: a warm-up epoch, then it prints `ready` and waits for a line on stdin, so that P
  processes start their measured steps together; then `--steps` full batches, and prints
  {"start": t0, "end": t1, "images": n} (wall-clock times, for the parent's aggregate).

`run_packed` starts P such processes at once and returns what they printed.

    python benchmarks/plain_trial.py --mode trial --model wrn34-0.5 --train 10000 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def config_of(args: argparse.Namespace):  # -> TrainConfig (imported late: the parent needs no torch)
    from wartune.engine.config import TrainConfig

    return TrainConfig(
        model=args.model, dataset=args.dataset, lam=6.0, epochs=args.epochs, batch_size=args.batch,
        attack={"steps": args.k}, eval={"steps": args.eval_steps, "max_examples": args.eval_examples}, seed=args.seed,
        device=args.device, threads=1,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["trial", "steps"], default="trial")
    parser.add_argument("--model", default="wrn34-0.5")
    parser.add_argument("--dataset", default="synthetic-cifar10", help="a synthetic-<name> set")
    parser.add_argument("--train", type=int, default=10_000, help="training images (a slice of the synthetic set)")
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40, help="mode steps: measured full batches")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--eval-examples", type=int, default=1000)
    parser.add_argument("--eval-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    from common import sync, synthetic_slice

    from wartune.engine.trainer import Trainer

    start = time.perf_counter()
    if args.mode == "trial":
        trainer = Trainer(config_of(args), synthetic_slice(args.train, args.test, args.dataset))
        trainer.fit()
        trainer.evaluate_test()
        sync(trainer.device)
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
        return
    trainer = Trainer(config_of(args), synthetic_slice(args.batch * args.steps, args.test, args.dataset))
    trainer.train_epoch()  # warm-up: cuDNN's choices and the graph's capture
    sync(trainer.device)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.time()
    trainer.train_epoch()
    sync(trainer.device)
    print(json.dumps({"start": t0, "end": time.time(), "images": args.batch * args.steps}), flush=True)


def run_packed(processes: int, options: list[str]) -> list[dict[str, float]]:
    """Start `processes` plain trials at once with `options`; in steps mode, release them together."""
    command = [sys.executable, str(HERE / "plain_trial.py"), *options]
    children = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    if "steps" in options:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
    results = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"plain_trial.py failed (exit {child.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


if __name__ == "__main__":
    main()
