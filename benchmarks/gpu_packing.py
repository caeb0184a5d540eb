"""Trials per GPU: `wartune search` at P = 1, 2, 4, 8 trials on one GPU, beside the same trials as
plain processes (the ceiling), so Ray's share is a figure.

For each packing P, a λ grid of P WRN-34-0.5 trials (the ζ calibration net) on synthetic CIFAR-10
(`--train-examples` of its training images, `--epochs` epochs, each evaluated on 1,000 test
images, and the best epoch on all 10,000, as every trial is) runs twice on one GPU:
- `wartune search` with `--gpus-per-trial 1/P` (Ray's fractional GPUs: P trial processes share
  the GPU), wall seconds as a user sees them, Ray's start included;
- P plain processes running the same trials without Ray (`plain_trial.py`), started at once.
Printed: wall seconds, trials per hour and training images per second of each, each against
P = 1, and Ray's share (1 − plain / search). Target (H200): the search at P = 8 ≥ 15,000 img/s
per GPU (with graphs; 3,828 img/s was measured eagerly as plain processes before them).
`--mps-at P...` runs those packings once more under CUDA MPS (one context shared by the
processes, so their kernels can run side by side), where the machine lets its control
daemon start; otherwise it says why in one line.

    python benchmarks/gpu_packing.py [--model wrn34-0.5] [--train-examples 10000] [--epochs 2] [--packing 1 2 4 8]
    python benchmarks/gpu_packing.py --smoke      # CPU: cnn-4 on synthetic MNIST, 1 and 2 trials at a time

Without a CUDA GPU (and without --smoke) it refuses in one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from common import device_name, record
from plain_trial import run_packed

WARTUNE = [sys.executable, "-m", "wartune.cli"]  # the CLI of this interpreter, installed or on PYTHONPATH


def write_space(folder: Path, args: argparse.Namespace, trials: int, gpu: float) -> Path:
    """A λ grid of `trials` trials whose every one asks for `gpu` of the GPU and one CPU."""
    space = {
        "strategy": "grid", "objective": "trades", "dataset": args.dataset, "model": args.model,
        "lambda": [float(6 + i) for i in range(trials)], "epochs": args.epochs, "batch_size": 128,
        "train_examples": args.train_examples, "attack": {"steps": args.k},
        "eval": {"steps": args.eval_steps, "max_examples": 1000}, "resources": {"cpu": 1, "gpu": gpu}, "seed": 0,
    }  # fmt: skip
    path = folder / f"packing_{trials}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def search_seconds(space: Path, out: Path, name: str, trials: int, gpus: int) -> float:
    """Wall seconds of one `wartune search` (Ray's start included, as a user sees it)."""
    command = [
        *WARTUNE, "search", "--space", str(space), "--out", str(out), "--name", name, "--no-mlflow",
        "--num-cpus", str(trials), "--num-gpus", str(gpus),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def plain_seconds(args: argparse.Namespace, trials: int, device: str) -> float:
    """Wall seconds of the same trials as plain processes started together."""
    options = ["--mode", "trial", "--model", args.model, "--dataset", args.dataset, "--train", str(args.train_examples),
               "--epochs", str(args.epochs), "--k", str(args.k), "--eval-steps", str(args.eval_steps), "--device", device]  # fmt: skip
    start = time.perf_counter()
    run_packed(trials, options)
    return time.perf_counter() - start


def start_mps(folder: Path) -> str | None:
    """Start CUDA MPS's control daemon for this script's children; None when it runs, else why not."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        return "nvidia-cuda-mps-control is not on this machine"
    os.environ["CUDA_MPS_PIPE_DIRECTORY"] = str(folder / "mps-pipe")
    os.environ["CUDA_MPS_LOG_DIRECTORY"] = str(folder / "mps-log")
    for key in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"):
        Path(os.environ[key]).mkdir()
    started = subprocess.run([control, "-d"], capture_output=True, text=True)
    return None if started.returncode == 0 else f"its daemon did not start: {(started.stderr or started.stdout).strip()}"


def stop_mps() -> None:
    control = shutil.which("nvidia-cuda-mps-control")
    if control is not None:
        subprocess.run([control], input="quit\n", text=True, capture_output=True)
    for key in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"):
        os.environ.pop(key, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wrn34-0.5")
    parser.add_argument("--dataset", default="synthetic-cifar10")
    parser.add_argument("--train-examples", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--k", type=int, default=10, help="training PGD steps")
    parser.add_argument("--eval-steps", type=int, default=20)
    parser.add_argument("--packing", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--mps-at", type=int, nargs="*", default=[], help="packings to run again under CUDA MPS")
    parser.add_argument("--json", type=Path, help="append the figures as one JSON line")
    parser.add_argument("--smoke", action="store_true", help="CPU only: cnn-4, synthetic MNIST, 256 images, 1 epoch, PGD-2, packing 1 and 2")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.dataset, args.train_examples, args.epochs, args.k, args.eval_steps = "cnn-4", "synthetic-mnist", 256, 1, 2, 1
        args.packing, gpus, unit, device = [1, 2], 0, "at a time on the CPU", torch.device("cpu")
    elif torch.cuda.is_available():
        gpus, unit, device = 1, "on one GPU", torch.device("cuda")
    else:
        print("gpu_packing.py: no CUDA GPU on this machine; --smoke runs the CPU version", file=sys.stderr)
        raise SystemExit(2)

    rows: dict[str, tuple[int, float, float]] = {}
    mps_note = None
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        for packing in args.packing:
            space = write_space(out, args, packing, 1.0 / packing if gpus else 0.0)
            searched = search_seconds(space, out / "runs", f"packing-{packing}", packing, gpus)
            rows[str(packing)] = (packing, searched, plain_seconds(args, packing, device.type))
        if args.mps_at and gpus:
            mps_note = start_mps(out)
            try:
                for packing in args.mps_at if mps_note is None else []:
                    space = write_space(out, args, packing, 1.0 / packing)
                    searched = search_seconds(space, out / "runs", f"mps-{packing}", packing, gpus)
                    rows[f"{packing} MPS"] = (packing, searched, plain_seconds(args, packing, device.type))
            finally:
                stop_mps()

    images = args.train_examples * args.epochs
    print(f"{args.model} on {args.dataset}, {args.train_examples} training images x {args.epochs} epoch(s), "
          f"PGD-{args.k}, {device_name(device)}{' (smoke)' if args.smoke else ''}")
    print(f"  {'P':>5} {'search s':>9} {'plain s':>8} {'search img/s':>13} {'plain img/s':>12} {'x P=1':>6} {'Ray share':>9}")
    base = None
    figures: dict[str, object] = {"device": device_name(device), "smoke": args.smoke, "model": args.model}
    for label, (packing, searched, plain) in rows.items():
        search_ips, plain_ips = packing * images / searched, packing * images / plain
        base = base or search_ips
        print(f"  {label:>5} {searched:9.1f} {plain:8.1f} {search_ips:13.1f} {plain_ips:12.1f} "
              f"{search_ips / base:6.2f} {1 - plain / searched:9.1%}   ({unit})")
        figures[f"P{label.replace(' ', '_')}"] = {"search_s": searched, "plain_s": plain, "search_ips": search_ips, "plain_ips": plain_ips}
    if mps_note is not None:
        print(f"  CUDA MPS not measured: {mps_note}")
        figures["mps"] = mps_note
    record(args.json, "gpu_packing", figures)


if __name__ == "__main__":
    main()
