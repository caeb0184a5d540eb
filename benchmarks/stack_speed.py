"""K λ-trials stacked into one grouped network against the same K trials one after another.

For each model and K, in one process: K lone `Trainer`s (λ from the paper's grid, seeds
0..K-1) each run one epoch in turn (`Trainer.run_epoch`: training, the lr step and the
per-epoch evaluation, what a trial's epoch costs), and a `StackedTrainer` of K more runs its
one epoch for all of them (`StackedTrainer.run_epoch`); `--train-only` times the training
passes alone. Both sides are warmed up, then alternated in rotating rounds (median round). On
a CPU the clock is thread time on one thread (a trial's `resources.cpu: 1`), so the figure is
the work, not the machine's load; on a GPU, wall time.

`--memory` adds each side's peak memory, in a fresh process that builds the side and runs
one epoch: on a GPU `max_memory_allocated`; on a CPU the process's peak resident set.

    python benchmarks/stack_speed.py                       # digits WRN-10-0.5 and WRN-10-2; K 1 2 4 6 8
    python benchmarks/stack_speed.py --models mlp-32 --dataset mnist --data-dir data
    python benchmarks/stack_speed.py --dataset synthetic-cifar10 --models wrn34-0.5 --ks 1,8,16 \
        --train-examples 4096 --train-only --memory         # gpu_all.sh's: the thin CIFAR net on a GPU
    python benchmarks/stack_speed.py --smoke               # K 1 2 on cnn-4, 1 round: checks the script
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from pathlib import Path

import torch
from common import device_name, median_seconds, record

from wartune.engine.config import TrainConfig
from wartune.engine.data import TensorDataset, load_dataset, training_subset
from wartune.engine.devices import resolve_device
from wartune.engine.stacked_trainer import StackedTrainer
from wartune.engine.trainer import Trainer

LAMBDAS = [1.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0]  # the main job's grid


def configs(model: str, dataset: str, data_dir: Path | None, k: int, device: str, train_examples: int | None) -> list[TrainConfig]:
    return [
        TrainConfig(model=model, dataset=dataset, data_dir=data_dir, lam=LAMBDAS[i % len(LAMBDAS)], seed=i,
                    device=device, threads=1, train_examples=train_examples)  # fmt: skip
        for i in range(k)
    ]


def sides(cfgs: list[TrainConfig], data: TensorDataset, train_only: bool = False, only: str | None = None) -> dict[str, object]:
    """The K trials' epoch one after another, and the stack's (`only`: that side alone is built);
    `train_only` leaves out the lr step and the evaluation."""
    trials = [c.model_copy(update={"epochs": 10_000}) for c in cfgs]  # any number of rounds fit
    built: dict[str, object] = {}
    if only in (None, "one after another"):
        lone = [Trainer(c, data) for c in trials]

        def one_after_another() -> None:
            for trainer in lone:
                trainer.train_epoch() if train_only else trainer.run_epoch()

        built["one after another"] = one_after_another
    if only in (None, "stacked"):
        stack = StackedTrainer([Trainer(c, data) for c in trials])
        built["stacked"] = stack.train_epoch if train_only else stack.run_epoch
    built["device"] = resolve_device(cfgs[0].device)
    return built


def _peak_child(cfgs: list[TrainConfig], side: str, train_only: bool, queue: multiprocessing.Queue) -> None:
    run = sides(cfgs, load_dataset(cfgs[0].dataset, cfgs[0].data_dir), train_only, only=side)
    device = run["device"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run[side]()
    if device.type == "cuda":
        queue.put(torch.cuda.max_memory_allocated(device) / 2**20)
    else:
        queue.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def peak_mib(cfgs: list[TrainConfig], side: str, train_only: bool) -> float:
    """The side's peak memory in MiB, in a fresh process: on a GPU what PyTorch allocated; on a
    CPU the whole process's peak resident set (Python, torch, the data and the side)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_child, args=(cfgs, side, train_only, queue))
    child.start()
    value = queue.get()
    child.join()
    return float(value)


def run_data(data: TensorDataset, examples: int | None) -> TensorDataset:
    """The training split a trial of `train_examples: examples` trains on."""
    return training_subset(data, examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="wrn10-0.5,wrn10-2")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--ks", default="1,2,4,6,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-examples", type=int, help="a subset of the training split (MNIST's study uses 5,120)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--train-only", action="store_true", help="time the training passes alone")
    parser.add_argument("--memory", action="store_true", help="each side's peak memory, in a fresh process")
    parser.add_argument("--json", type=Path, help="append the figures as one JSON line")
    parser.add_argument("--smoke", action="store_true", help="cnn-4, K 1 and 2, 1 round, 256 examples")
    args = parser.parse_args()
    models, ks, rounds = args.models.split(","), [int(k) for k in args.ks.split(",")], args.rounds
    examples = args.train_examples
    if args.smoke:
        models, ks, rounds, examples = ["cnn-4"], [1, 2], 1, 256
    data = load_dataset(args.dataset, args.data_dir)
    figures: dict[str, object] = {}
    for model in models:
        for k in ks:
            cfgs = configs(model, args.dataset, args.data_dir, k, args.device, examples)
            run = sides(cfgs, data, args.train_only)
            device = run.pop("device")
            clock = time.thread_time if device.type == "cpu" else time.perf_counter
            seconds = median_seconds(run, rounds, device, clock=clock)  # type: ignore[arg-type]
            serial, stacked = seconds["one after another"], seconds["stacked"]
            images = k * len(run_data(data, examples).train_y)  # training images of the K trials' epoch
            line = (f"{model:10s} K={k}  one after another {serial:7.2f} s   stacked {stacked:7.2f} s   "
                    f"speed-up {serial / stacked:5.2f}x   stacked {images / stacked:8.0f} img/s")  # fmt: skip
            figures[f"{model} K={k}"] = {"speedup": round(serial / stacked, 3), "stacked_ips": round(images / stacked),
                                         "serial_ips": round(images / serial)}  # fmt: skip
            if args.memory:
                mem = {side: peak_mib(cfgs, side, args.train_only) for side in ("one after another", "stacked")}
                line += f"   peak MiB {mem['one after another']:.0f} / {mem['stacked']:.0f}"
                figures[f"{model} K={k}"]["peak_mib"] = [round(v) for v in mem.values()]
            print(line, flush=True)
    what = "training epoch" if args.train_only else "epoch (training, lr step, evaluation)"
    print(f"device: {device_name(device)}; one {what} of {args.dataset} per trial; one thread on a CPU")
    record(args.json, "stack_speed", {"device": device_name(device), "train_only": args.train_only, **figures})


if __name__ == "__main__":
    main()
