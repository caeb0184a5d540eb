"""K λ-trials of one model trained as one grouped network, each member exactly its lone trial.

A stack is built from K lone `Trainer`s whose configs differ only in λ (fixed or WAR) and
seed. Each member keeps everything a lone trial has: its own initial weights (its seed), its
own generator (so its own batches, augmentation and attack starts, drawn in the lone order),
its λ controller, its BN statistics, its momentum, its epochs' records and best weights. Only
the arithmetic is shared: one grouped network (`stacking.py`) runs every member's attack,
forward and backward passes at once, and one SGD steps every member's weights (SGD is
elementwise, so it is each member's SGD).

The step reads as the lone one (`Trainer.step_on`): attack → l_nat, l_rob per member → each
member's λ_t → one SGD step on Σ_k (l_nat_k + λ_t,k · l_rob_k). The members never mix: the
grouped layers keep their channels apart, the attack ascends the sum of the members' losses
(each example's gradient is its own member's), and the sum's gradient in a member's weights
is that member's own loss's.

After each epoch the stack writes each member's weights and momentum back into its Trainer
(`sync_members`), which then closes the epoch with the lone code (`Trainer.close_epoch`: lr
schedule, evaluation, records, best weights). So a member's resume point is a lone one, a
stack's checkpoint is its members', and a stack resumes by loading each member and stacking
again. A member whose loss turns non-finite is dropped from the stack, with its error, and the
others go on; so is one a scheduler stops (`drop`).
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from wartune.engine.attacks import pgd_from, stacked_start_noise
from wartune.engine.batches import train_batches
from wartune.engine.config import TrainConfig
from wartune.engine.data import TensorDataset, load_dataset
from wartune.engine.evaluation import eval_seed, evaluate_stacked
from wartune.engine.metrics import RobustnessMetrics
from wartune.engine.optimizer import build_sgd
from wartune.engine.precision import model_call
from wartune.engine.records import EpochRecord, StepLog, StepTrace, TrainResult
from wartune.engine.stacking import (
    StackedNet,
    member_state,
    member_tensor,
    stack_models,
    stack_tensors,
    stackable,
    unstackable_settings,
)
from wartune.engine.trainer import DivergedError, Trainer

MEMBER_FIELDS = {"lam", "seed"}  # what may differ between the members of a stack

EpochOutcome = EpochRecord | DivergedError


def why_not_stacked(configs: Sequence[TrainConfig]) -> str | None:
    """Why these trials cannot share a stack (None when they can)."""
    first = configs[0].model_dump(exclude=MEMBER_FIELDS)
    for config in configs[1:]:
        other = config.model_dump(exclude=MEMBER_FIELDS)
        if other != first:
            fields = sorted(k for k in first if first[k] != other.get(k))
            return f"the trials differ in {', '.join(fields)}: only lam and seed may differ within a stack"
    return unstackable_settings(configs[0].precision, configs[0].objective)


class StackedTrainer:
    """Lone `Trainer`s (`members`) trained as one grouped network; see the module docstring.

    `ids` names each member by its place in the list the stack was built from; `run_epoch`
    reports by those ids, and `members`/`ids` shrink as members are dropped.
    """

    def __init__(self, members: Sequence[Trainer]) -> None:
        if not members:
            raise ValueError("a stack needs at least one member")
        why = why_not_stacked([m.config for m in members]) or stackable(members[0].config.model, members[0].model)
        if why:
            raise ValueError(why)
        if len({m.epoch for m in members}) != 1:
            raise ValueError("the members of a stack must stand at the same epoch")
        self.members = list(members)
        self.ids = list(range(len(members)))
        self.dropped: dict[int, str] = {}
        first = self.members[0]
        self.config, self.device, self.precision = first.config, first.device, first.precision
        self.objective, self.train_attack = first.objective, first.train_attack
        self.restack()

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def epoch(self) -> int:
        return self.members[0].epoch if self.members else self.config.epochs

    @property
    def finished(self) -> bool:
        return not self.members or self.epoch >= self.config.epochs

    def restack(self) -> None:
        """Build the grouped network, its SGD and its momentum from the members as they are now."""
        self.model = stack_models([m.model for m in self.members])
        # channels_last on every device: on a CPU a grouped convolution runs 2x faster in it
        # (and faster than the members' K convolutions), as convolutions do on CUDA
        call = model_call(self.model, self.precision, self.device, self.config.compile, channels_last=True)
        self.net = StackedNet(call, self.size)
        self.optimizer = build_sgd(self.model.parameters(), self.config, self.device)
        self._follow_schedule()
        lone = [list(m.model.parameters()) for m in self.members]
        for i, param in enumerate(self.model.parameters()):
            buffers = [m.optimizer.state.get(ps[i], {}).get("momentum_buffer") for m, ps in zip(self.members, lone, strict=True)]
            if all(b is not None for b in buffers):
                self.optimizer.state[param]["momentum_buffer"] = stack_tensors(buffers, param)

    def _follow_schedule(self) -> None:
        """The stack's lr is its members' (one schedule, stepped by each member's own scheduler)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.members[0].optimizer.param_groups[0]["lr"]

    def sync_members(self) -> None:
        """Write each member's weights, BN statistics and momentum back into its Trainer."""
        stacked = list(self.model.parameters())
        for k, member in enumerate(self.members):
            member.model.load_state_dict(member_state(self.model, k, member.model.state_dict()))
            for param, lone in zip(stacked, member.model.parameters(), strict=True):
                buffer = self.optimizer.state.get(param, {}).get("momentum_buffer")
                if buffer is not None:
                    member.optimizer.state[lone]["momentum_buffer"] = member_tensor(buffer, k, lone)

    def step_on(self, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """One step of Algorithm 1 for every member, on a member-major batch; returns each
        member's (l_nat, l_rob, λ_t) as K-vectors and every example's gradient ℓ1 max."""
        attack = pgd_from(self.net, x, y, self.train_attack, noise)
        self.net.train()
        logits_nat = self.net(x).chunk(self.size)
        logits_adv = self.net(attack.x_adv).chunk(self.size)
        pairs = [self.objective.losses(n, a, t) for n, a, t in zip(logits_nat, logits_adv, y.chunk(self.size), strict=True)]
        l_nat = torch.stack([pair[0] for pair in pairs])
        l_rob = torch.stack([pair[1] for pair in pairs])
        lambda_t = torch.stack(
            [m.controller.update(l_nat[k].detach(), l_rob[k].detach()) for k, m in enumerate(self.members)]
        )
        loss = (l_nat + lambda_t.to(l_rob.dtype) * l_rob).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return l_nat.detach(), l_rob.detach(), lambda_t, attack.grad_l1_max

    def train_epoch(self) -> list[tuple[StepTrace, float]]:
        """One pass of every member over its own batches; each member's trace and train Lipschitz."""
        logs = [StepLog() for _ in self.members]
        feeds = [train_batches(m.data, self.config.batch_size, m.generator, self.device) for m in self.members]
        for batches in zip(*feeds, strict=True):
            x = torch.cat([b[0] for b in batches])
            y = torch.cat([b[1] for b in batches])
            noise = stacked_start_noise([b[0] for b in batches], self.train_attack, [m.generator for m in self.members])
            l_nat, l_rob, lambda_t, grad_l1 = self.step_on(x, y, noise)
            for k, (log, grads) in enumerate(zip(logs, grad_l1.chunk(self.size), strict=True)):
                log.append(l_nat[k], l_rob[k], lambda_t[k], grads)
        return [log.to_host() for log in logs]

    def run_epoch(self) -> dict[int, EpochOutcome]:
        """Train every member one epoch as the stack, then close each member's epoch as a lone
        trial does. Each member's record counts its share of the stack's training time. A
        member that diverged is dropped (its outcome is the DivergedError)."""
        start = time.perf_counter()
        opened = [m.open_epoch() for m in self.members]
        epochs = self.train_epoch()
        self.sync_members()
        metrics = self.evaluate()
        share = (time.perf_counter() - start) / self.size
        outcomes: dict[int, EpochOutcome] = {}
        for member_id, member, before, epoch, figures in zip(self.ids, self.members, opened, epochs, metrics, strict=True):
            try:
                trace, train_lipschitz = member.checked(epoch)
            except DivergedError as error:
                outcomes[member_id] = error
                continue
            with warnings.catch_warnings():  # its scheduler steps its lr; the stack's SGD stepped its weights
                warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
                outcomes[member_id] = member.close_epoch(before, trace, train_lipschitz, share, figures)
        diverged = [i for i, outcome in outcomes.items() if isinstance(outcome, DivergedError)]
        if diverged:
            self.drop(diverged, "diverged")
        elif self.members:
            self._follow_schedule()
        return outcomes

    def evaluate(self) -> list[RobustnessMetrics]:
        """Each member's evaluation of the epoch being closed, in one pass of the stack: the
        figures its lone `Trainer.evaluate` gives after `close_epoch` counts the epoch."""
        seeds = [eval_seed(m.config.seed, m.epoch + 1) for m in self.members]
        return evaluate_stacked(self.net, self.members[0].data, self.members[0].eval_attack, seeds, self.config.eval_examples)

    def drop(self, member_ids: Sequence[int], why: str) -> None:
        """Take members out of the stack (diverged, or stopped by a scheduler); the rest go on."""
        self.sync_members()
        keep = [i for i, member_id in enumerate(self.ids) if member_id not in member_ids]
        for member_id in member_ids:
            self.dropped[member_id] = why
        self.members = [self.members[i] for i in keep]
        self.ids = [self.ids[i] for i in keep]
        if self.members:
            self.restack()

    def state_dicts(self) -> dict[int, dict[str, Any]]:
        """Each member's complete resume point by id, a lone trial's (`Trainer.state_dict`): a
        stack resumes as a new stack of members that each loaded theirs."""
        self.sync_members()
        return {member_id: member.state_dict() for member_id, member in zip(self.ids, self.members, strict=True)}

    def fit(self, on_epoch: Callable[[dict[int, EpochOutcome], StackedTrainer], None] | None = None) -> None:
        """Run the remaining epochs, calling `on_epoch` after each with every member's outcome."""
        while not self.finished:
            outcomes = self.run_epoch()
            if on_epoch is not None:
                on_epoch(outcomes, self)


def train_stack(configs: Sequence[TrainConfig], data: TensorDataset | None = None) -> list[TrainResult | DivergedError]:
    """Train several configs that differ only in λ and seed as one stack; the plain-Python
    counterpart of `train` (no Ray needed). Each result is what `train(config)` returns for
    that config, in order, or the `DivergedError` of a member whose loss diverged."""
    if data is None:
        data = load_dataset(configs[0].dataset, configs[0].data_dir)
    members = [Trainer(config, data) for config in configs]
    stack = StackedTrainer(members)
    errors: dict[int, DivergedError] = {}

    def keep_errors(outcomes: dict[int, EpochOutcome], _: StackedTrainer) -> None:
        errors.update({i: o for i, o in outcomes.items() if isinstance(o, DivergedError)})

    stack.fit(keep_errors)
    return [errors.get(i) or member.result() for i, member in enumerate(members)]
