"""Evaluating a model on the test split: natural and PGD robust accuracy, stability, Lipschitz.

A plain function of (model, data, attack, seed), usable without a Trainer. Its random
starts come from a generator of its own, seeded by (run seed, epoch): evaluation never
disturbs the training RNG, and a resumed run evaluates exactly as the uninterrupted one.
`wartune evaluate`'s PGD-20 is this same attack (`attack_suite`), so both columns agree.
"""

from __future__ import annotations

import torch
from torch import nn

from wartune.engine.attacks import PGDConfig, pgd_linf
from wartune.engine.batches import eval_batches
from wartune.engine.data import TensorDataset
from wartune.engine.metrics import ExampleFlags, RobustnessMetrics, example_flags, summarize

EVAL_BATCH = 256


def eval_seed(seed: int, epoch: int) -> int:
    """The seed of the per-epoch evaluation's random starts: distinct for each (seed, epoch)."""
    return seed * 1_000_003 + epoch


def flags_under_attack(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> ExampleFlags:
    """Correct / stable / robust per example, from f(x) and f(x̂) of the same x̂ (Sec. 3.1)."""
    with torch.no_grad():
        return example_flags(model(x).argmax(dim=1), model(x_adv).argmax(dim=1), y)


def evaluate_model(
    model: nn.Module,
    data: TensorDataset,
    attack: PGDConfig,
    seed: int,
    max_examples: int | None = None,
    batch_size: int = EVAL_BATCH,
) -> RobustnessMetrics:
    """Natural and PGD robust accuracy, stability and mean Lipschitz on the first test examples.

    One generator, seeded by `seed`, draws every batch's random start in order. `model`
    may be a trainer's `net`, so the evaluation runs at the run's precision.
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    model.eval()
    flags, grads = [], []
    for x, y in eval_batches(data, max_examples, batch_size, device):
        result = pgd_linf(model, x, y, attack, generator)
        flags.append(flags_under_attack(model, x, result.x_adv, y))
        grads.append(result.grad_l1_max)
    return summarize(ExampleFlags.cat(flags), torch.cat(grads).cpu())
