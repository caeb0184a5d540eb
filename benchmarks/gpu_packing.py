"""Trials packed per GPU: `wartune search` throughput at 1, 2, 4 and 8 trials on each GPU.

For each packing P, one `wartune search` runs P × (GPUs) trials of a λ grid at
`--gpus-per-trial 1/P`, so every GPU holds P trials at once; the script prints the
search's wall seconds, trials per hour, and the throughput relative to P = 1. The trials
train on the embedded digits data (no data folder needed), so a GPU is far from full at
P = 1 and packing is what fills it. Target: throughput grows with P until the GPU is busy
(P = 4 ≥ 2.5× P = 1 for the default small model).

    python benchmarks/gpu_packing.py [--model wrn16-4] [--epochs 3] [--packing 1 2 4 8]
    python benchmarks/gpu_packing.py --smoke      # CPU: 1 and 2 trials at a time, cnn-8, under a minute

Without a CUDA GPU (and without --smoke) it refuses in one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

WARTUNE = Path(sys.executable).with_name("wartune")


def write_space(folder: Path, model: str, epochs: int, steps: int, lambdas: list[float], gpu: float) -> Path:
    """A λ grid on digits whose every trial asks for `gpu` of a GPU and one CPU."""
    space = {
        "strategy": "grid", "objective": "trades", "dataset": "digits", "model": model, "lambda": lambdas,
        "epochs": epochs, "batch_size": 128, "attack": {"eps": 0.2, "step": 0.05, "steps": steps},
        "eval": {"steps": steps, "max_examples": 180}, "resources": {"cpu": 1, "gpu": gpu}, "seed": 0,
    }  # fmt: skip
    path = folder / f"packing_{len(lambdas)}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def run_search(space: Path, out: Path, name: str, num_cpus: int, num_gpus: int) -> float:
    """Wall seconds of one `wartune search` (Ray start included, as a user sees it)."""
    command = [
        str(WARTUNE), "search", "--space", str(space), "--out", str(out), "--name", name, "--no-mlflow",
        "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wrn16-4")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="PGD steps of training and evaluation")
    parser.add_argument("--packing", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--smoke", action="store_true", help="CPU only: cnn-8, 1 epoch, PGD-2, packing 1 and 2")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.epochs, args.steps, args.packing = "cnn-8", 1, 2, [1, 2]
        gpus, unit = 0, "at a time on the CPU"
    elif torch.cuda.is_available():
        gpus, unit = torch.cuda.device_count(), "per GPU"
    else:
        print("gpu_packing.py: no CUDA GPU on this machine; --smoke runs the CPU version", file=sys.stderr)
        raise SystemExit(2)

    seconds: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        for packing in args.packing:
            trials = packing * max(gpus, 1)
            lambdas = [float(1 + i) for i in range(trials)]
            gpu_share = 1.0 / packing if gpus else 0.0
            space = write_space(out, args.model, args.epochs, args.steps, lambdas, gpu_share)
            num_cpus = trials if gpus else packing  # on the CPU, P trials at a time is P CPUs
            seconds[packing] = run_search(space, out / "runs", f"packing-{packing}", num_cpus, gpus)

    print(f"{args.model} on digits, {args.epochs} epoch(s), PGD-{args.steps}, {gpus} GPU(s)"
          f"{' (smoke)' if args.smoke else ''}")
    base = None
    for packing, wall in seconds.items():
        trials = packing * max(gpus, 1)
        per_hour = trials * 3600 / wall
        base = base or per_hour
        print(f"  {packing} {unit}: {trials:3d} trials in {wall:7.1f} s = {per_hour:8.1f} trials/h, {per_hour / base:5.2f}x P=1")


if __name__ == "__main__":
    main()
