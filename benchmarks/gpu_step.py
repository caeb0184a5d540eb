"""One TRADES-10 training step: wartune's Trainer eager and as a CUDA graph, at fp32 and bf16, against
a plain loop and the floor.

Images per second of one step (attack of K PGD steps → l_nat, l_rob → λ_t → SGD step) at
batch 128 on synthetic CIFAR-10 (`synthetic-cifar10`), for each model:
- `ref fp32`: the loop as TRADES' reference code writes it: host-side batches copied to the
  device every step, fp32, contiguous layout, default (foreach) SGD, `loss.item()` every step;
- `eager fp32`, `eager bf16+cl`: `Trainer.train_epoch` with `graphs: off` (fused SGD);
- `eager bf16+cl foreach`: the same with PyTorch's default foreach SGD: what the fused optimizer gives;
- `graph fp32`, `graph bf16+cl`: `graphs: on`, the step captured once and replayed;
- `graph bf16+cl+compile`: the same with `torch.compile` (fused BN + ReLU), unless `--no-compile`;
- `floor`: the step's forward and backward passes alone (K attack passes + the two training
  passes, bf16 + channels_last, device-resident tensors, eager).
`auto` prints which of fp32 and bf16 `precision: auto` picks for the model (`BF16_MIN_PARAMETERS`).
Targets (H200): WRN-34-10 graph bf16+cl ≥ 2.5× ref fp32; WRN-34-0.5 ≥ 5,000 img/s and ≥ 5× ref fp32.

    python benchmarks/gpu_step.py [--models wrn34-10 wrn34-0.5] [--rounds 5] [--steps 8]
    python benchmarks/gpu_step.py --smoke      # a small net on the CPU, under a minute
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import Side, device_name, median_seconds, record, synthetic_slice
from reference_trades import reference_trades_step

from wartune.engine.config import TrainConfig
from wartune.engine.devices import resolve_device
from wartune.engine.models import create_model
from wartune.engine.precision import model_call, resolve_precision
from wartune.engine.trainer import Trainer


def trainer_side(args: argparse.Namespace, model: str, device: torch.device, precision: str, graphs: str,
                 compile: bool = False, fused: bool = True) -> Side:  # fmt: skip
    """wartune's own epoch over `steps` device-resident batches (channels_last on CUDA, as trials run)."""
    config = TrainConfig(
        model=model, dataset="synthetic-cifar10", lam=6.0, batch_size=args.batch, attack={"steps": args.k},
        precision=precision, compile=compile, graphs=graphs, device=str(device),
    )  # fmt: skip
    trainer = Trainer(config, synthetic_slice(args.batch * args.steps))
    if not fused:
        for group in trainer.optimizer.param_groups:
            group["fused"] = False

    def run() -> None:
        trainer.train_epoch()

    return run


def reference_side(args: argparse.Namespace, model_name: str, device: torch.device) -> Side:
    """TRADES' `train()` + `trades_loss()`, written plainly: host batches, fp32, `.item()` per step."""
    model = create_model(model_name, 10, 3, 32).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    data = synthetic_slice(args.batch * args.steps)
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


def sides_for(args: argparse.Namespace, model: str, device: torch.device, with_compile: bool) -> dict[str, Side]:
    sides: dict[str, Side] = {
        "ref fp32": reference_side(args, model, device),
        "eager fp32": trainer_side(args, model, device, "fp32", "off"),
        "eager bf16+cl": trainer_side(args, model, device, "bf16", "off"),
        "eager bf16+cl foreach": trainer_side(args, model, device, "bf16", "off", fused=False),
        "graph fp32": trainer_side(args, model, device, "fp32", "on"),
        "graph bf16+cl": trainer_side(args, model, device, "bf16", "on"),
    }
    if with_compile:
        sides["graph bf16+cl+compile"] = trainer_side(args, model, device, "bf16", "on", compile=True)
    sides["floor"] = floor_side(args, model, device)
    return sides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["wrn34-10", "wrn34-0.5"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--k", type=int, default=10, help="attack steps (TRADES-10)")
    parser.add_argument("--steps", type=int, default=8, help="training steps per measured round (>= 4: 3 warm up the graph)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile side")
    parser.add_argument("--json", type=Path, help="append the figures as one JSON line")
    parser.add_argument("--smoke", action="store_true", help="wrn10-0.5, batch 8, K=2, 4 steps x 2 rounds: checks the script on a CPU")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.batch, args.k, args.steps, args.rounds = ["wrn10-0.5"], 8, 2, 4, 2
    device = resolve_device(args.device)
    with_compile = not (args.no_compile or args.smoke)  # inductor on a CPU takes minutes to compile
    torch.backends.cudnn.benchmark = True

    results: dict[str, dict[str, float]] = {}
    for model in args.models:
        seconds = median_seconds(sides_for(args, model, device, with_compile), args.rounds, device)
        results[model] = {name: args.batch * args.steps / s for name, s in seconds.items()}
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print(f"TRADES-{args.k} step, batch {args.batch}, synthetic CIFAR-10, {args.steps} steps x {args.rounds} rounds "
          f"on {device_name(device)}{' (smoke)' if args.smoke else ''}{'' if with_compile else '; compile side left out'}")
    figures: dict[str, object] = {"device": device_name(device), "smoke": args.smoke}
    for model, ips in results.items():
        auto = resolve_precision("auto", device, create_model(model, 10, 3, 32))
        print(f"{model}: (precision auto picks {auto})")
        for name, value in ips.items():
            print(f"  {name:24s} {value:9.1f} img/s")
        graph, ref, floor = ips["graph bf16+cl"], ips["ref fp32"], ips["floor"]
        best = max(graph, ips["graph fp32"])
        print(f"  graph bf16+cl / ref fp32   : {graph / ref:6.2f}x   (target >= 2.5 on WRN-34-10)")
        print(f"  best graph / ref fp32      : {best / ref:6.2f}x   (target >= 5 on WRN-34-0.5)")
        print(f"  graph / eager, bf16+cl     : {graph / ips['eager bf16+cl']:6.2f}x   (what the graph gives)")
        print(f"  fused / foreach SGD, eager : {ips['eager bf16+cl'] / ips['eager bf16+cl foreach']:6.2f}x")
        print(f"  bf16 / fp32, graphs        : {graph / ips['graph fp32']:6.2f}x   (precision auto's rule)")
        print(f"  time graph bf16+cl / floor : {floor / graph:6.2f}    (target <= 1.15 on WRN-34-10)")
        figures[model] = {**ips, "auto": auto}
    record(args.json, "gpu_step", figures)


if __name__ == "__main__":
    main()
