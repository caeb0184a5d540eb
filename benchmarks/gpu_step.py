"""One TRADES-10 training step: wartune's Trainer at each precision against a plain loop and the floor.

Images per second of one step (attack of K PGD steps → l_nat, l_rob → λ_t → SGD step) at
batch 128 on CIFAR-shaped random data (3×32×32, 10 classes), for each model:
- `ref fp32`: the loop as TRADES' reference code writes it: host-side batches copied to the
  device every step, fp32, contiguous layout, `loss.item()` every step;
- `wartune fp32`, `wartune bf16`, `wartune bf16+cl` (channels_last), `wartune bf16+cl+compile`:
  `Trainer.train_epoch` over device-resident data (one epoch = the measured steps);
- `floor`: the step's forward and backward passes alone (K attack passes + the two training
  passes, at bf16 + channels_last, on device-resident tensors: no sign, projection,
  augmentation, λ or optimizer).
Every side is built and warmed up first, then measured in rounds whose order rotates, so
order favours none; each side's figure is its median round. Targets (GPU, WRN-34-10):
bf16+cl ≥ 2.5× ref fp32, and bf16+cl within 1.15× of the floor (time ratio ≤ 1.15).

    python benchmarks/gpu_step.py [--models wrn34-10 wrn34-0.5] [--rounds 5] [--steps 5]
    python benchmarks/gpu_step.py --smoke      # a small net on the CPU, under a minute
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from reference_trades import reference_trades_step

from wartune.engine.config import TrainConfig
from wartune.engine.data import TensorDataset, dataset_info
from wartune.engine.devices import resolve_device
from wartune.engine.models import create_model
from wartune.engine.precision import model_call
from wartune.engine.trainer import Trainer

Side = Callable[[], None]  # runs the measured steps once


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cifar_shaped(n: int, seed: int = 0) -> TensorDataset:
    """Random uint8 images and labels of CIFAR-10's shape, augmented as CIFAR-10 is."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return TensorDataset(dataset_info("cifar10"), images, labels, images[:256], labels[:256])


def trainer_side(args: argparse.Namespace, model: str, device: torch.device, precision: str, channels_last: bool, compile: bool) -> Side:
    """wartune's own epoch over `steps` device-resident batches."""
    config = TrainConfig(
        model=model, dataset="cifar10", lam=6.0, batch_size=args.batch, attack={"steps": args.k},
        precision=precision, compile=compile, device=str(device),
    )
    trainer = Trainer(config, cifar_shaped(args.batch * args.steps))
    if not channels_last:  # the bf16-only side: undo the CUDA default layout
        trainer.model.to(memory_format=torch.contiguous_format)
        trainer.net = model_call(trainer.model, trainer.precision, device, compile, channels_last=False)

    def run() -> None:
        trainer.train_epoch()

    return run


def reference_side(args: argparse.Namespace, model_name: str, device: torch.device) -> Side:
    """TRADES' `train()` + `trades_loss()`, written plainly: host batches, fp32, `.item()` per step."""
    model = create_model(model_name, 10, 3, 32).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    data = cifar_shaped(args.batch * args.steps)
    x_host, y_host = data.train_x.float() / 255, data.train_y
    eps, step, beta = 8 / 255, 0.007, 6.0

    def run() -> None:
        for start in range(0, len(y_host), args.batch):
            x, y = x_host[start : start + args.batch].to(device), y_host[start : start + args.batch].to(device)
            reference_trades_step(model, optimizer, x, y, eps, step, args.k, beta).item()  # as TRADES logs

    return run


def floor_side(args: argparse.Namespace, model_name: str, device: torch.device) -> Side:
    """The step's forward and backward passes and nothing else, at bf16 + channels_last."""
    model = create_model(model_name, 10, 3, 32).to(device)
    net = model_call(model, "bf16", device, channels_last=True)
    x = torch.rand(args.batch, 3, 32, 32, device=device)

    def run() -> None:
        for _ in range(args.steps):
            net.eval()
            x_adv = x.clone()
            for _ in range(args.k):
                x_adv.requires_grad_(True)
                (grad,) = torch.autograd.grad(net(x_adv).sum(), [x_adv])
                x_adv = x_adv.detach()
            net.train()
            (net(x).sum() + net(x_adv).sum()).backward()

    return run


def measure(sides: dict[str, Side], args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Images per second of each side: warm-up once, then rounds in rotating order, the median round."""
    for run in sides.values():
        run()
    sync(device)
    names = list(sides)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync(device)
            start = time.perf_counter()
            sides[name]()
            sync(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: args.batch * args.steps / statistics.median(s) for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["wrn34-10", "wrn34-0.5"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--k", type=int, default=10, help="attack steps (TRADES-10)")
    parser.add_argument("--steps", type=int, default=5, help="training steps per measured round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile side")
    parser.add_argument("--smoke", action="store_true", help="wrn10-0.5, batch 8, K=2, 1 step x 2 rounds: checks the script on a CPU")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.batch, args.k, args.steps, args.rounds = ["wrn10-0.5"], 8, 2, 1, 2
    device = resolve_device(args.device)
    with_compile = not (args.no_compile or args.smoke)  # inductor on a CPU takes minutes to compile
    torch.backends.cudnn.benchmark = True

    results: dict[str, dict[str, float]] = {}
    for model in args.models:
        sides: dict[str, Side] = {
            "ref fp32": reference_side(args, model, device),
            "wartune fp32": trainer_side(args, model, device, "fp32", channels_last=False, compile=False),
            "wartune bf16": trainer_side(args, model, device, "bf16", channels_last=False, compile=False),
            "wartune bf16+cl": trainer_side(args, model, device, "bf16", channels_last=True, compile=False),
        }
        if with_compile:
            sides["wartune bf16+cl+compile"] = trainer_side(args, model, device, "bf16", channels_last=True, compile=True)
        sides["floor"] = floor_side(args, model, device)
        results[model] = measure(sides, args, device)
        del sides
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print(f"TRADES-{args.k} step, batch {args.batch}, 3x32x32, {args.steps} steps x {args.rounds} rounds on {device}"
          f"{' (smoke)' if args.smoke else ''}{'' if with_compile else '; compile side left out'}")
    for model, ips in results.items():
        print(f"{model}:")
        for name, value in ips.items():
            print(f"  {name:26s} {value:9.1f} img/s")
        fast, ref, floor = ips["wartune bf16+cl"], ips["ref fp32"], ips["floor"]
        print(f"  speed-up bf16+cl / ref fp32 : {fast / ref:6.2f}x   (target >= 2.5 on a GPU, WRN-34-10)")
        print(f"  time bf16+cl / floor        : {floor / fast:6.2f}    (target <= 1.15 on a GPU)")
        print(f"  time wartune fp32 / ref fp32: {ref / ips['wartune fp32']:6.2f}")


if __name__ == "__main__":
    main()
