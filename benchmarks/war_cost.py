"""What WAR costs on CIFAR-10: GPU-hours of the paper's setting from throughputs measured on the GPU at hand.

Short runs on synthetic CIFAR-10 with the settings trials get (`precision: auto`, `graphs: auto`):
- WRN-34-10 and WRN-34-0.5 training images per second, one process each (steady state, after
  a warm-up epoch), and each one's PGD-20 evaluation seconds per test image;
- WRN-34-0.5 packed: `--packing` P plain processes on the GPU at once, their aggregate
  training images per second (as Ray's fractional GPUs run P trials per GPU).
Then the paper's CIFAR-10 setting: 100 epochs of 50,000 images, each epoch evaluated on 1,000
test images, a final PGD-20 on all 10,000. A trial costs E·(50,000 / ips + 1,000·e) + 10,000·e
GPU-seconds (e: evaluation seconds per image); a packed thin trial costs that divided by the
packing's speed-up over one process. The grid is 6 trials of WRN-34-10; WAR is the 6-λ
calibration grid on WRN-34-0.5, packed, plus one WAR run of WRN-34-10. Goal: WAR / grid ≤ 0.22
(the paper's Table 3 on V100s: 50 / 192 = 0.26).

    python benchmarks/war_cost.py [--packing 8] [--steps 20]
    python benchmarks/war_cost.py --smoke      # small nets on the CPU: checks the arithmetic and the script
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import device_name, record, sync, synthetic_slice
from plain_trial import run_packed

from wartune.engine.config import TrainConfig
from wartune.engine.devices import resolve_device
from wartune.engine.trainer import Trainer

GRID_TRIALS = 6  # the paper's λ grid {6, 9, 12, 15, 18, 21}, and WAR's calibration grid
EPOCHS, TRAIN, EVAL_PER_EPOCH, TEST = 100, 50_000, 1_000, 10_000


def throughput(model: str, args: argparse.Namespace, steps: int, device: torch.device) -> tuple[float, float]:
    """(training images/s, evaluation seconds per test image) of one process, after a warm-up."""
    config = TrainConfig(model=model, dataset="synthetic-cifar10", lam=6.0, batch_size=args.batch, attack={"steps": args.k},
                         eval={"steps": 20, "max_examples": args.test}, device=str(device), threads=1)  # fmt: skip
    trainer = Trainer(config, synthetic_slice(args.batch * steps, args.test))
    trainer.train_epoch()
    trainer.evaluate()  # warm-up: cuDNN's choices, the graphs' captures
    sync(device)
    start = time.perf_counter()
    trainer.train_epoch()
    sync(device)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    trainer.evaluate()
    sync(device)
    return args.batch * steps / train_seconds, (time.perf_counter() - start) / args.test


def trial_seconds(images_per_second: float, eval_seconds_per_image: float) -> float:
    """GPU-seconds of one trial of the paper's setting."""
    return EPOCHS * (TRAIN / images_per_second + EVAL_PER_EPOCH * eval_seconds_per_image) + TEST * eval_seconds_per_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wide", default="wrn34-10")
    parser.add_argument("--thin", default="wrn34-0.5")
    parser.add_argument("--packing", type=int, default=8, help="thin trials per GPU")
    parser.add_argument("--steps", type=int, default=20, help="measured training steps of batch 128 per model")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--test", type=int, default=512, help="test images of the timed evaluation")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="append the figures as one JSON line")
    parser.add_argument("--smoke", action="store_true", help="wrn10-2 / wrn10-0.5, K=2, batch 16, packing 2, on a CPU")
    args = parser.parse_args()
    if args.smoke:
        args.wide, args.thin, args.packing, args.steps, args.k, args.batch, args.test = "wrn10-2", "wrn10-0.5", 2, 2, 2, 16, 32
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True

    wide_ips, wide_eval = throughput(args.wide, args, args.steps, device)
    thin_ips, thin_eval = throughput(args.thin, args, args.steps * 4, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    packed = run_packed(args.packing, ["--mode", "steps", "--model", args.thin, "--steps", str(args.steps * 4),
                                       "--batch", str(args.batch), "--k", str(args.k), "--test", str(args.test),
                                       "--device", str(device)])  # fmt: skip
    span = max(p["end"] for p in packed) - min(p["start"] for p in packed)
    packed_ips = sum(p["images"] for p in packed) / span
    speedup = packed_ips / thin_ips

    wide_trial = trial_seconds(wide_ips, wide_eval)
    thin_trial = trial_seconds(thin_ips, thin_eval)
    grid = GRID_TRIALS * wide_trial
    war_alone = GRID_TRIALS * thin_trial + wide_trial
    war_packed = GRID_TRIALS * thin_trial / max(speedup, 1.0) + wide_trial

    print(f"WAR's cost on CIFAR-10 from throughputs on {device_name(device)}{' (smoke)' if args.smoke else ''}: "
          f"{EPOCHS} epochs x {TRAIN} images, TRADES-{args.k}")
    print(f"  {args.wide:10s} {wide_ips:9.1f} img/s   eval {wide_eval * 1e3:7.3f} ms/img   trial {wide_trial / 3600:8.2f} GPU-h")
    print(f"  {args.thin:10s} {thin_ips:9.1f} img/s   eval {thin_eval * 1e3:7.3f} ms/img   trial {thin_trial / 3600:8.2f} GPU-h alone")
    print(f"  {args.thin} x {args.packing} per GPU: {packed_ips:9.1f} img/s together ({speedup:.2f}x one alone)")
    print(f"  thin trial / wide trial       : 1/{wide_trial / (thin_trial / max(speedup, 1.0)):.1f} packed, 1/{wide_trial / thin_trial:.1f} alone")
    print(f"  grid ({GRID_TRIALS} x {args.wide})           : {grid / 3600:8.2f} GPU-h")
    print(f"  WAR (6 x {args.thin} + 1 x {args.wide}): {war_packed / 3600:8.2f} GPU-h packed, {war_alone / 3600:.2f} alone")
    print(f"  WAR / grid                    : {war_packed / grid:8.3f} packed, {war_alone / grid:.3f} alone   (goal <= 0.22; paper 0.26)")
    record(args.json, "war_cost", {
        "device": device_name(device), "smoke": args.smoke, "wide": args.wide, "thin": args.thin,
        "wide_ips": wide_ips, "thin_ips": thin_ips, "packing": args.packing, "packed_ips": packed_ips,
        "wide_eval_s": wide_eval, "thin_eval_s": thin_eval, "grid_gpu_h": grid / 3600, "war_gpu_h": war_packed / 3600,
        "ratio": war_packed / grid, "ratio_unpacked": war_alone / grid,
    })  # fmt: skip


if __name__ == "__main__":
    main()
