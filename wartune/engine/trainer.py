"""The training engine: adversarial training of one model under one λ controller.

Pure PyTorch: no Ray, MLflow or files beyond its own checkpoint. One step reads in the
order of Algorithm 1: attack → l_nat, l_rob → λ_t → SGD step on l_nat + λ_t · l_rob.
Every epoch ends with an evaluation (natural, PGD-20 robust, stability, Lipschitz).
`state_dict()` holds everything a resumed run needs to continue bit for bit on CPU.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wartune.engine.attacks import pgd_linf
from wartune.engine.config import FixedLambda, TrainConfig
from wartune.engine.data import TensorDataset, augment_batch, load_dataset, to_float
from wartune.engine.lambdas import WAR, Fixed, LambdaController
from wartune.engine.metrics import ExampleFlags, RobustnessMetrics, example_flags, summarize
from wartune.engine.models import create_model
from wartune.engine.objectives import get_objective
from wartune.engine.schedules import make_scheduler


class DivergedError(RuntimeError):
    """Training produced a NaN or infinite loss; the run cannot continue."""


@dataclass
class StepTrace:
    """Per-step losses and λ_t of one epoch (WAR's trace; ζ's spread)."""

    l_nat: list[float] = field(default_factory=list)
    l_rob: list[float] = field(default_factory=list)
    lambda_t: list[float] = field(default_factory=list)


@dataclass
class EpochRecord:
    """One epoch's training statistics and evaluation: one row of `epochs.parquet`."""

    epoch: int
    nat_acc: float
    rob_acc: float
    stability: float
    lipschitz: float
    train_lipschitz: float
    l_nat: float
    l_rob: float
    zeta: float
    zeta_step_std: float
    lambda_mean: float
    lambda_last: float
    lambda_min: float
    lambda_max: float
    lr: float
    wall_seconds: float
    eval_examples: int

    def metrics(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class TrainResult:
    """What `train` returns: the per-epoch history and the trained model."""

    config: TrainConfig
    history: list[EpochRecord]
    model: nn.Module
    best_epoch: int
    step_traces: list[StepTrace]

    @property
    def best(self) -> EpochRecord:
        return self.history[self.best_epoch - 1]

    @property
    def final(self) -> EpochRecord:
        return self.history[-1]


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_controller(spec: Any) -> LambdaController:
    """The λ controller described by a config's `lam` field."""
    if isinstance(spec, FixedLambda):
        return Fixed(spec.value)
    return WAR(zeta=spec.zeta, alpha=spec.alpha, lambda0=spec.lambda0)


def zeta_of(l_nat_mean: float, l_rob_mean: float) -> float:
    """ζ = (epoch mean of l_nat) / (epoch mean of l_rob); NaN when l_rob's mean is 0."""
    return l_nat_mean / l_rob_mean if l_rob_mean > 0 else math.nan


class Trainer:
    """Trains and evaluates one model; resumable from `state_dict()`."""

    def __init__(self, config: TrainConfig, data: TensorDataset | None = None) -> None:
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        self._seed_all(config.seed)
        self.data = data if data is not None else load_dataset(config.dataset, config.data_dir)
        info = self.data.info
        self.device = resolve_device(config.device)
        self.model = create_model(config.model, info.num_classes, info.in_channels, info.image_size).to(self.device)
        self.objective = get_objective(config.objective)
        self.train_attack = config.train_pgd()
        self.eval_attack = config.eval_pgd()
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.scheduler = make_scheduler(config.schedule, self.optimizer, config.epochs)
        self.controller = make_controller(config.lam)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch = 0
        self.history: list[EpochRecord] = []
        self.step_traces: list[StepTrace] = []
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] = {}

    @staticmethod
    def _seed_all(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    @property
    def eps(self) -> float:
        return self.train_attack.eps

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float, torch.Tensor]:
        """One step of Algorithm 1; returns (l_nat, l_rob, λ_t, per-example gradient ℓ1 max)."""
        attack = pgd_linf(self.model, x, y, self.train_attack, self.generator)
        self.model.train()
        logits_nat = self.model(x)
        logits_adv = self.model(attack.x_adv)
        l_nat, l_rob = self.objective.losses(logits_nat, logits_adv, y)
        l_nat_v, l_rob_v = l_nat.item(), l_rob.item()
        if not (math.isfinite(l_nat_v) and math.isfinite(l_rob_v)):
            raise DivergedError(f"loss diverged at epoch {self.epoch + 1}: l_nat={l_nat_v}, l_rob={l_rob_v}")
        lambda_t = self.controller.update(l_nat_v, l_rob_v)
        loss = l_nat + lambda_t * l_rob
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return l_nat_v, l_rob_v, lambda_t, attack.grad_l1_max

    def _train_batches(self) -> Any:
        """Shuffled minibatches of the training split, on the device, in [0, 1]."""
        data = self.data
        order = torch.randperm(len(data.train_y), generator=self.generator)
        for start in range(0, len(order), self.config.batch_size):
            idx = order[start : start + self.config.batch_size]
            x = to_float(data.train_x[idx])
            if data.info.augment:
                x = augment_batch(x, self.generator)
            yield x.to(self.device), data.train_y[idx].to(self.device)

    def train_epoch(self) -> tuple[StepTrace, float]:
        """One pass over the training split; returns the step trace and mean train Lipschitz."""
        trace = StepTrace()
        grad_sum, grad_n = 0.0, 0
        for x, y in self._train_batches():
            l_nat, l_rob, lambda_t, grad_l1 = self.train_step(x, y)
            trace.l_nat.append(l_nat)
            trace.l_rob.append(l_rob)
            trace.lambda_t.append(lambda_t)
            grad_sum += grad_l1.sum().item()
            grad_n += grad_l1.numel()
        return trace, grad_sum / max(grad_n, 1)

    def evaluate(self, max_examples: int | None = None) -> RobustnessMetrics:
        """Natural and PGD-20 accuracy, stability and Lipschitz on the test split.

        The attack's random start is seeded by (seed, epoch), so evaluation never disturbs
        the training RNG and a resumed run evaluates identically.
        """
        data = self.data
        n = len(data.test_y)
        limit = min(n, max_examples or self.config.eval.max_examples or n)
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.epoch)
        correct, stable, robust, grads = [], [], [], []
        self.model.eval()
        for start in range(0, limit, 256):
            x = to_float(data.test_x[start : min(start + 256, limit)]).to(self.device)
            y = data.test_y[start : min(start + 256, limit)].to(self.device)
            attack = pgd_linf(self.model, x, y, self.eval_attack, gen)
            with torch.no_grad():
                pred_nat = self.model(x).argmax(dim=1)
                pred_adv = self.model(attack.x_adv).argmax(dim=1)
            flags = example_flags(pred_nat, pred_adv, y)
            correct.append(flags.correct.cpu())
            stable.append(flags.stable.cpu())
            robust.append(flags.robust.cpu())
            grads.append(attack.grad_l1_max.cpu())
        all_flags = ExampleFlags(torch.cat(correct), torch.cat(stable), torch.cat(robust))
        return summarize(all_flags, torch.cat(grads))

    def run_epoch(self) -> EpochRecord:
        """Train one epoch, step the lr schedule, evaluate, and remember the best weights."""
        start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        trace, train_lipschitz = self.train_epoch()
        self.scheduler.step()
        self.epoch += 1
        metrics = self.evaluate()
        l_nat_mean = float(np.mean(trace.l_nat))
        l_rob_mean = float(np.mean(trace.l_rob))
        ratios = [a / b for a, b in zip(trace.l_nat, trace.l_rob, strict=True) if b > 0]
        record = EpochRecord(
            epoch=self.epoch,
            nat_acc=metrics.nat_acc,
            rob_acc=metrics.rob_acc,
            stability=metrics.stability,
            lipschitz=metrics.lipschitz,
            train_lipschitz=train_lipschitz,
            l_nat=l_nat_mean,
            l_rob=l_rob_mean,
            zeta=zeta_of(l_nat_mean, l_rob_mean),
            zeta_step_std=float(np.std(ratios)) if ratios else math.nan,
            lambda_mean=float(np.mean(trace.lambda_t)),
            lambda_last=trace.lambda_t[-1],
            lambda_min=min(trace.lambda_t),
            lambda_max=max(trace.lambda_t),
            lr=lr,
            wall_seconds=time.perf_counter() - start,
            eval_examples=metrics.n,
        )
        self.history.append(record)
        self.step_traces.append(trace)
        if self.best_epoch == 0 or record.rob_acc > self.history[self.best_epoch - 1].rob_acc:
            self.best_epoch = self.epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return record

    @property
    def finished(self) -> bool:
        return self.epoch >= self.config.epochs

    def fit(self, on_epoch: Callable[[EpochRecord, Trainer], None] | None = None) -> TrainResult:
        """Run the remaining epochs, calling `on_epoch` after each (checkpointing, reporting)."""
        while not self.finished:
            record = self.run_epoch()
            if on_epoch is not None:
                on_epoch(record, self)
        return self.result()

    def result(self) -> TrainResult:
        return TrainResult(self.config, list(self.history), self.model, self.best_epoch, list(self.step_traces))

    # --- checkpointing -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights, optimizer, scheduler, RNGs, controller, epoch, history: a complete resume point.

        Only tensors, numbers, strings, lists and dicts, so it loads with
        `torch.load(..., weights_only=True)`.
        """
        state: dict[str, Any] = {
            "format": 1,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"},
            "controller": self.controller.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": [asdict(r) for r in self.history],
            "step_traces": [asdict(t) for t in self.step_traces],
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        sched_state = dict(self.scheduler.state_dict())
        sched_state.update(state["scheduler"])
        self.scheduler.load_state_dict(sched_state)
        self.controller.load_state_dict(state["controller"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.history = [EpochRecord(**r) for r in state["history"]]
        self.step_traces = [StepTrace(**t) for t in state["step_traces"]]
        self.best_epoch = int(state["best_epoch"])
        self.best_state = state["best_state"]

    def save(self, path: Path | str) -> None:
        """Write the resume point atomically (a partial file never replaces a good one)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)

    def load(self, path: Path | str) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))


def train(config: TrainConfig, checkpoint: Path | str | None = None, data: TensorDataset | None = None) -> TrainResult:
    """Train one model from a config; the plain-Python entry point (no Ray needed).

    With `checkpoint`, the run resumes from that file when it exists and rewrites it
    after every epoch, so an interrupted notebook cell picks up where it stopped.
    """
    trainer = Trainer(config, data)
    if checkpoint is not None and Path(checkpoint).exists():
        trainer.load(checkpoint)
    on_epoch = None
    if checkpoint is not None:
        path = Path(checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)

        def on_epoch(record: EpochRecord, t: Trainer) -> None:
            t.save(path)

    return trainer.fit(on_epoch)


def best_model_meta(trainer: Trainer) -> dict[str, Any]:
    """What `checkpoints.load_model` needs to rebuild the best model, plus its scores."""
    info = trainer.data.info
    best = trainer.history[trainer.best_epoch - 1]
    return {
        "model": trainer.config.model,
        "num_classes": info.num_classes,
        "in_channels": info.in_channels,
        "image_size": info.image_size,
        "dataset": info.name,
        "eps": trainer.eps,
        "epoch": trainer.best_epoch,
        "nat_acc": best.nat_acc,
        "rob_acc": best.rob_acc,
        "stability": best.stability,
        "train_config": trainer.config.model_dump(mode="json"),
    }
