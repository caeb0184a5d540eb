"""Evaluating a model on a split: natural and PGD robust accuracy, stability, Lipschitz.

A trainer evaluates each epoch on the validation split (which chooses the best epoch) and its
chosen weights once on the test split.

A plain function of (model, data, attack, seed), usable without a Trainer. Its random
starts come from a generator of its own, seeded by (run seed, epoch): evaluation never
disturbs the training RNG, and a resumed run evaluates exactly as the uninterrupted one.
`wartune evaluate`'s PGD-20 is this same attack (`attack_suite`), so both columns agree.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from wartune.engine.attacks import PGDConfig, pgd_from, stacked_start_noise, start_noise
from wartune.engine.batches import eval_batches
from wartune.engine.data import TensorDataset
from wartune.engine.metrics import ExampleFlags, RobustnessMetrics, example_flags, summarize

EVAL_BATCH = 256
# One evaluated batch: (x, y, the random start's offset) -> (correct, stable, robust, grad ℓ1 max) per example.
BatchAttack = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, ...]]


def eval_seed(seed: int, epoch: int) -> int:
    """The seed of the per-epoch evaluation's random starts: distinct for each (seed, epoch)."""
    return seed * 1_000_003 + epoch


def flags_under_attack(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> ExampleFlags:
    """Correct / stable / robust per example, from f(x) and f(x̂) of the same x̂ (Sec. 3.1)."""
    with torch.no_grad():
        return example_flags(model(x).argmax(dim=1), model(x_adv).argmax(dim=1), y)


def attack_batch(
    model: nn.Module, attack: PGDConfig, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None
) -> tuple[torch.Tensor, ...]:
    """One batch attacked from x + `noise` and judged: the per-example flags and Lipschitz estimate.

    Device work only, so a trainer can capture it as a CUDA graph (`engine/graphs.py`).
    """
    result = pgd_from(model, x, y, attack, noise)
    flags = flags_under_attack(model, x, result.x_adv, y)
    return flags.correct, flags.stable, flags.robust, result.grad_l1_max


def evaluate_model(
    model: nn.Module,
    data: TensorDataset,
    attack: PGDConfig,
    seed: int,
    max_examples: int | None = None,
    batch_size: int = EVAL_BATCH,
    run_batch: BatchAttack | None = None,
    split: str = "test",
) -> RobustnessMetrics:
    """Natural and PGD robust accuracy, stability and mean Lipschitz on the first examples of `split`.

    One generator, seeded by `seed`, draws every batch's random start in order. `model`
    may be a trainer's `net`, so the evaluation runs at the run's precision; `run_batch`
    (by default `attack_batch` on `model`) is how a trainer replays its captured attack.
    """
    # The parameters are evaluate_flags' own, written out rather than passed on as **kwargs so
    # that every call stays typed and checked: the one pair of twin signatures in the package.
    return evaluate_flags(model, data, attack, seed, max_examples, batch_size, run_batch, split)[0]


def evaluate_flags(
    model: nn.Module,
    data: TensorDataset,
    attack: PGDConfig,
    seed: int,
    max_examples: int | None = None,
    batch_size: int = EVAL_BATCH,
    run_batch: BatchAttack | None = None,
    split: str = "test",
) -> tuple[RobustnessMetrics, ExampleFlags]:
    """`evaluate_model`'s figures and each example's flags, for comparing two models on the same images."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    run_batch = run_batch or partial(attack_batch, model, attack)
    model.eval()
    flags, grads = [], []
    for x, y in eval_batches(data, max_examples, batch_size, device, split):
        correct, stable, robust, grad_l1_max = run_batch(x, y, start_noise(x, attack, generator))
        flags.append(ExampleFlags(correct, stable, robust))
        grads.append(grad_l1_max)
    every = ExampleFlags.cat(flags)
    return summarize(every, torch.cat(grads).cpu()), every


def evaluate_stacked(
    net: nn.Module,
    data: TensorDataset,
    attack: PGDConfig,
    seeds: list[int],
    max_examples: int | None = None,
    batch_size: int = EVAL_BATCH,
) -> list[RobustnessMetrics]:
    """`evaluate_model` on the validation split for each member of a stack at once
    (`stacking.StackedNet`, K = len(seeds)).

    Every member sees each validation batch (a member-major copy per member) with its random start
    drawn from its own generator, seeded as its lone evaluation's would be, so member k's
    figures are those `evaluate_model` gives its weights with `seeds[k]`.
    """
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    device = next(net.parameters()).device
    net.eval()
    flags: list[list[ExampleFlags]] = [[] for _ in seeds]
    grads: list[list[torch.Tensor]] = [[] for _ in seeds]
    members = len(seeds)
    for x, y in eval_batches(data, max_examples, batch_size, device, "validation"):
        noise = stacked_start_noise([x] * members, attack, generators)
        parts = attack_batch(net, attack, x.repeat(members, *([1] * (x.dim() - 1))), y.repeat(members), noise)
        for k, (correct, stable, robust, grad_l1_max) in enumerate(zip(*(p.chunk(members) for p in parts), strict=True)):
            flags[k].append(ExampleFlags(correct, stable, robust))
            grads[k].append(grad_l1_max)
    return [summarize(ExampleFlags.cat(f), torch.cat(g).cpu()) for f, g in zip(flags, grads, strict=True)]
