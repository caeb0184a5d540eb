"""How to stack K models: grouped layers (`wartune.engine.stacking`) or `torch.func.vmap`.

The same TRADES step (PGD on the KL term, then l_nat + λ·l_rob and an SGD step on every
member) on K copies of one model, three ways, in one process, alternated (median round):

- `grouped`: the members as one grouped network (`stacking.stack_models`, channels_last);
- `vmap`: `torch.func.stack_module_state` + `functional_call` under `vmap` over the members;
- `one after another`: each member's own step in turn.

The stacked engine uses the faster of the two stacked forms; docs/architecture.md quotes
the figures. On a CPU the clock is thread time on one thread.

    python benchmarks/stack_layout.py                    # WRN-10-0.5, cnn-8, mlp-32 on digits' shape, K 6
    python benchmarks/stack_layout.py --smoke            # 1 round: checks the script
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
from common import median_seconds
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from wartune.engine.models import create_model
from wartune.engine.precision import model_call
from wartune.engine.stacking import StackedNet, stack_models

Net = Callable[[torch.Tensor], torch.Tensor]  # [K·B, C, H, W] -> [K·B, classes]


def trades_step(net: Net, train: Callable[[bool], None], params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, k: int) -> None:
    """PGD-10 on the KL term from x + 0.001·N(0, 1), then every member's loss and a plain SGD step."""
    train(False)
    with torch.no_grad():
        target = F.softmax(net(x), dim=1)
    x_adv = x + 0.001 * torch.randn_like(x)
    for _ in range(10):
        x_adv.requires_grad_(True)
        loss = F.kl_div(F.log_softmax(net(x_adv), dim=1), target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, [x_adv])
        x_adv = (x_adv.detach() + 0.05 * grad.sign()).clamp(0, 1)
    train(True)
    nat, adv = net(x).chunk(k), net(x_adv).chunk(k)
    loss = sum(
        F.cross_entropy(n, t) + 6 * F.kl_div(F.log_softmax(a, dim=1), F.softmax(n, dim=1), reduction="batchmean")
        for n, a, t in zip(nat, adv, y.chunk(k), strict=True)
    )
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p -= 0.1 * g


def sides(name: str, k: int, batch: int) -> dict[str, Callable[[], None]]:
    models: list[nn.Module] = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(create_model(name, 10, 1, 8))
    x, y = torch.rand(k * batch, 1, 8, 8), torch.randint(0, 10, (k * batch,))

    grouped = stack_models(models)
    grouped_net = StackedNet(model_call(grouped, "fp32", torch.device("cpu"), channels_last=True), k)

    params, buffers = stack_module_state(models)  # type: ignore[arg-type]
    for p in params.values():
        p.requires_grad_(True)
    base = copy.deepcopy(models[0]).to("meta")
    batched = vmap(lambda p, b, xs: functional_call(base, (p, b), (xs,)))

    def vmap_net(xs: torch.Tensor) -> torch.Tensor:
        return batched(params, buffers, xs.reshape(k, batch, *xs.shape[1:])).reshape(k * batch, -1)

    lone = copy.deepcopy(models)

    def one_after_another() -> None:
        for m, xs, ys in zip(lone, x.chunk(k), y.chunk(k), strict=True):
            trades_step(m, m.train, list(m.parameters()), xs, ys, 1)

    return {
        "grouped": lambda: trades_step(grouped_net, grouped_net.train, list(grouped.parameters()), x, y, k),
        "vmap": lambda: trades_step(vmap_net, base.train, list(params.values()), x, y, k),
        "one after another": one_after_another,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="wrn10-0.5,cnn-8,mlp-32")
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rounds = 1 if args.smoke else args.rounds
    for name in args.models.split(","):
        seconds = median_seconds(sides(name, args.k, args.batch), rounds, torch.device("cpu"), clock=time.thread_time)
        serial = seconds["one after another"]
        print(
            f"{name:10s} K={args.k}  one after another {serial * 1000:7.1f} ms   "
            + "   ".join(f"{side} {seconds[side] * 1000:7.1f} ms ({serial / seconds[side]:.2f}x)" for side in ("grouped", "vmap")),
            flush=True,
        )


if __name__ == "__main__":
    main()
