"""The training engine: adversarial training of one model under one λ controller.

Pure PyTorch: no Ray, MLflow or files beyond its own checkpoint. `Trainer` holds the
training state and the step, which reads in the order of Algorithm 1: attack → l_nat,
l_rob → λ_t → SGD step on l_nat + λ_t · l_rob. Feeding lives in `batches`, the
per-epoch evaluation in `evaluation`, the resume point in `state`, how the model is
called (precision, layout, compile) in `precision`, CUDA graphs of the step in `graphs`.

A step never waits for the device: the data live there, λ_t is a device tensor, the attack's
random start is drawn before the step and handed in, and the step's numbers are read back
once per epoch, when a non-finite loss is also caught. So on CUDA the step (`step_on`) is
captured once as a CUDA graph and replayed for every full batch (`graphs: auto`).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wartune.engine.attacks import pgd_from, start_noise
from wartune.engine.awp import WeightPerturbation
from wartune.engine.batches import train_batches
from wartune.engine.config import FixedLambda, TrainConfig
from wartune.engine.data import TensorDataset, load_dataset, on_device, training_subset
from wartune.engine.devices import resolve_device
from wartune.engine.evaluation import (
    EVAL_BATCH,
    BatchAttack,
    attack_batch,
    eval_seed,
    evaluate_flags,
    evaluate_model,
)
from wartune.engine.graphs import GraphedCall, TensorLR, graphs_plan, say
from wartune.engine.lambdas import WAR, Fixed, LambdaController
from wartune.engine.metrics import RobustnessMetrics, TestResult
from wartune.engine.models import create_model
from wartune.engine.objectives import get_objective
from wartune.engine.optimizer import build_sgd, match_device
from wartune.engine.precision import attack_at, grad_scaler, model_call, resolve_precision
from wartune.engine.records import (
    EpochRecord,
    StepLog,
    StepTrace,
    TrainResult,
    epoch_record,
    zeta_of,
)
from wartune.engine.schedules import make_scheduler
from wartune.engine.state import (
    config_changes,
    load_state,
    restore_trainer,
    save_state,
    trainer_state,
)
from wartune.engine.validation import carve_validation
from wartune.errors import ConfigError

__all__ = [
    "DivergedError",
    "EpochRecord",
    "StepTrace",
    "TrainResult",
    "Trainer",
    "best_model_meta",
    "make_controller",
    "resolve_device",
    "train",
    "zeta_of",
]


class DivergedError(RuntimeError):
    """Training produced a NaN or infinite loss; the run cannot continue."""


def make_controller(spec: Any, device: torch.device = torch.device("cpu"), *, steps_per_epoch: int) -> LambdaController:
    """The λ controller described by a config's `lam` field, keeping λ_t on `device`.

    `steps_per_epoch` (ceil(training examples / batch size)) sizes WAR's `alpha_per: epoch`
    and its default one-epoch window.
    """
    if isinstance(spec, FixedLambda):
        return Fixed(spec.value, device)
    return WAR.from_rule(spec.war_rule(spec.zeta, steps_per_epoch), spec.lambda0, device)


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch's global RNG (weight init draws from torch's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """The state of one adversarial-training run and its step; resumable from `state_dict()`.

    `model` is the trained module (checkpointed, its keys unprefixed); `net` is how every
    forward pass calls it (autocast, channels_last, compile); `precision` is the resolved
    fp32 / bf16 / fp16 the run trains at; `graphs` says how its step runs (`graph_mode`).
    """

    def __init__(self, config: TrainConfig, data: TensorDataset | None = None) -> None:
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_all(config.seed)
        self.device = resolve_device(config.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
        data = data if data is not None else load_dataset(config.dataset, config.data_dir)
        self.validation_indices = torch.empty(0, dtype=torch.int64)  # training indices held out (none: given)
        if data.val_x is None:
            data, self.validation_indices = carve_validation(data, config.validation)
        self.data = on_device(training_subset(data, config.train_examples), self.device)
        info = self.data.info
        self.model = create_model(config.model, info.num_classes, info.in_channels, info.image_size).to(self.device)
        self.precision = resolve_precision(config.precision, self.device, self.model)
        self.net = model_call(self.model, self.precision, self.device, config.compile)
        self.scaler = grad_scaler(self.precision, self.device)
        self.objective = get_objective(config.objective)
        self.train_attack = attack_at(config.train_pgd(), self.precision)
        self.eval_attack = attack_at(config.eval_pgd(), self.precision)
        self.optimizer = build_sgd(self.model.parameters(), config, self.device)
        self.scheduler = make_scheduler(config.schedule, self.optimizer, config.epochs)
        steps_per_epoch = math.ceil(len(self.data.train_y) / config.batch_size)
        self.controller = make_controller(config.lam, self.device, steps_per_epoch=steps_per_epoch)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch = 0
        self.history: list[EpochRecord] = []
        self.step_traces: list[StepTrace] = []
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] = {}
        # AWP's proxy (one per trial) and its weight moves; its step runs eagerly, never as a CUDA graph
        self.awp = WeightPerturbation(self.model) if self.objective.perturbs_weights else None
        self.staged, self.capture, why_not = graphs_plan("off" if self.awp else config.graphs, self.device, self.precision)
        if why_not and config.graphs == "on":
            say(f"graphs on: {why_not}")
        self._graphed: tuple[GraphedCall, GraphedCall] | None = None

    @property
    def eps(self) -> float:
        return self.train_attack.eps

    @property
    def finished(self) -> bool:
        return self.epoch >= self.config.epochs

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One step of Algorithm 1, eagerly; returns (l_nat, l_rob, λ_t, per-example gradient ℓ1 max) on the device."""
        return self.step_on(x, y, start_noise(x, self.train_attack, self.generator))

    def step_on(self, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """The step from a given random start: device work only, the code a CUDA graph captures."""
        attack = pgd_from(self.net, x, y, self.train_attack, noise)
        self.net.train()
        deltas = None
        if self.awp is not None:  # AWP: train on weights moved up the objective, then move them back
            deltas = self.awp.perturbation(lambda net: self.objective.losses(net(x), net(attack.x_adv), y), self.controller.value)
            self.awp.apply(deltas, 1.0)
        logits_nat = self.net(x)
        logits_adv = self.net(attack.x_adv)
        l_nat, l_rob = self.objective.losses(logits_nat, logits_adv, y)
        lambda_t = self.controller.update(l_nat.detach(), l_rob.detach())
        loss = l_nat + lambda_t.to(l_rob.dtype) * l_rob
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.awp is not None and deltas is not None:
            self.awp.apply(deltas, -1.0)
        return l_nat.detach(), l_rob.detach(), lambda_t, attack.grad_l1_max

    def graphed(self) -> tuple[GraphedCall, GraphedCall] | None:
        """The training step and evaluation attack as `GraphedCall`s (None when `graphs` is off here).

        Made on first use, after any resume point was loaded: loading replaces the
        optimizer's momentum buffers, which a captured step reads by address.
        """
        if not self.staged:
            return None
        if self._graphed is None:
            lr = TensorLR(self.optimizer, self.device)
            step = GraphedCall(self.step_on, self.config.batch_size, "training step", self.capture,
                               capture_context=lr.swapped_in, before_replay=lr.refresh)  # fmt: skip
            # the training step's warm-up already made autograd's and cuBLAS's state: one eager call
            # lets cuDNN choose its kernels for the evaluation's batch shape
            attack = GraphedCall(partial(attack_batch, self.net, self.eval_attack), EVAL_BATCH,
                                 "evaluation attack", self.capture, warmup=1)  # fmt: skip
            self._graphed = (step, attack)
        return self._graphed

    @property
    def graph_mode(self) -> str:
        """How the step runs: `off` (plain eager), `eager` (staged, not captured), `captured`, or `failed: why`."""
        graphed = self._graphed
        if not self.staged:
            return "off"
        if graphed is not None and graphed[0].failure:
            return f"failed: {graphed[0].failure}"
        if graphed is not None and graphed[0].captured:
            return "captured"
        return "eager" if not self.capture else "warming up"

    def train_epoch(self) -> tuple[StepTrace, float]:
        """One pass over the training split; returns the step trace and mean train Lipschitz.

        A NaN or infinite loss is caught here, when the epoch's numbers reach the host: the
        epoch is then neither recorded nor evaluated, and its poisoned weights never become
        the best ones.
        """
        log = StepLog()
        graphed = self.graphed()
        run_step = graphed[0] if graphed is not None else self.step_on
        for x, y in train_batches(self.data, self.config.batch_size, self.generator, self.device):
            log.append(*run_step(x, y, start_noise(x, self.train_attack, self.generator)))
        return self.checked(log.to_host())

    def checked(self, epoch: tuple[StepTrace, float]) -> tuple[StepTrace, float]:
        """The epoch's trace as it is, or DivergedError naming its first non-finite step."""
        trace = epoch[0]
        if (step := trace.first_non_finite()) is not None:
            raise DivergedError(
                f"loss diverged at epoch {self.epoch + 1}, step {step + 1}: "
                f"l_nat={trace.l_nat[step]}, l_rob={trace.l_rob[step]}"
            )
        return epoch

    def evaluate(self, max_examples: int | None = None) -> RobustnessMetrics:
        """Natural and PGD-20 accuracy, stability and Lipschitz on the first `eval_examples`
        validation examples (`TrainingSettings.eval_examples`), seeded by (seed, epoch): what
        chooses the best epoch."""
        limit = max_examples or self.config.eval_examples
        seed = eval_seed(self.config.seed, self.epoch)
        graphed = self.graphed()
        run_batch: BatchAttack | None = graphed[1] if graphed is not None else None
        return evaluate_model(self.net, self.data, self.eval_attack, seed, limit, run_batch=run_batch, split="validation")

    def run_epoch(self) -> EpochRecord:
        """Train one epoch, step the lr schedule, evaluate, and remember the best weights."""
        start = time.perf_counter()
        opened = self.open_epoch()
        trace, train_lipschitz = self.train_epoch()
        return self.close_epoch(opened, trace, train_lipschitz, time.perf_counter() - start)

    def open_epoch(self) -> tuple[float, int]:
        """What an epoch's record needs from before its training: its lr and WAR's skipped steps so far."""
        return float(self.optimizer.param_groups[0]["lr"]), self.controller.skipped_steps

    def close_epoch(
        self, opened: tuple[float, int], trace: StepTrace, train_lipschitz: float, train_seconds: float,
        metrics: RobustnessMetrics | None = None,
    ) -> EpochRecord:  # fmt: skip
        """After an epoch's training (here, or as a member of a stack): step the lr schedule,
        evaluate (unless a stack evaluated this epoch's weights already: `metrics`), record the
        epoch, and remember the best weights. The record's wall seconds are `train_seconds` (a
        stack member's share of its stack's) plus what this takes."""
        start = time.perf_counter()
        lr, skipped_before = opened
        self.scheduler.step()
        self.epoch += 1
        metrics = metrics or self.evaluate()
        skipped = self.controller.skipped_steps - skipped_before
        seconds = train_seconds + time.perf_counter() - start
        record = epoch_record(self.epoch, trace, train_lipschitz, metrics, lr, seconds, skipped)
        self.history.append(record)
        self.step_traces.append(trace)
        if self.best_epoch == 0 or record.val_rob_acc > self.history[self.best_epoch - 1].val_rob_acc:
            self.best_epoch = self.epoch
            self.best_state = {
                k: v.detach().cpu().clone(memory_format=torch.contiguous_format)  # safetensors wants contiguous
                for k, v in self.model.state_dict().items()
            }
        return record

    def evaluate_test(self) -> TestResult:
        """The best epoch's weights (chosen on the validation split) attacked once on the whole
        test split: the run's result, and the only time it reads the test split.

        Seeded as that epoch's own evaluation was (`eval_seed(seed, best_epoch)`), so it is
        reproducible; the per-example flags let two runs be compared on the same test images.
        """
        model = copy.deepcopy(self.model)  # a copy: the trained weights stay as they are; no RNG draw
        model.load_state_dict(self.best_state)
        net = model_call(model, self.precision, self.device)
        seed = eval_seed(self.config.seed, self.best_epoch)
        return TestResult(*evaluate_flags(net, self.data, self.eval_attack, seed))

    def fit(self, on_epoch: Callable[[EpochRecord, Trainer], None] | None = None) -> TrainResult:
        """Run the remaining epochs, calling `on_epoch` after each (checkpointing, reporting)."""
        while not self.finished:
            record = self.run_epoch()
            if on_epoch is not None:
                on_epoch(record, self)
        return self.result()

    def result(self) -> TrainResult:
        return TrainResult(self.config, list(self.history), self.model, self.best_epoch, list(self.step_traces))

    def state_dict(self) -> dict[str, Any]:
        """The complete resume point (see `wartune.engine.state`); loads with `weights_only=True`."""
        return trainer_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_trainer(self, state)
        match_device(self.optimizer, self.device)
        self._graphed = None  # captured steps read the replaced momentum buffers by address

    def save(self, path: Path | str) -> None:
        """Write the resume point atomically (a partial file never replaces a good one)."""
        save_state(self.state_dict(), path)

    def load(self, path: Path | str) -> None:
        self.load_state_dict(load_state(path, self.device))


def train(config: TrainConfig, checkpoint: Path | str | None = None, data: TensorDataset | None = None) -> TrainResult:
    """Train one model from a config; the plain-Python entry point (no Ray needed).

    With `checkpoint`, the run resumes from that file when it exists and rewrites it
    after every epoch, so an interrupted notebook cell picks up where it stopped; a file
    that another config wrote (another λ, more epochs) is refused, never continued.
    """
    trainer = Trainer(config, data)
    if checkpoint is not None and Path(checkpoint).exists():
        state = load_state(checkpoint, trainer.device)
        if changes := config_changes(state, config):
            raise ConfigError(
                f"checkpoint {str(checkpoint)!r} was trained with other settings ({'; '.join(changes)}): "
                "train with the config that wrote it, or give another checkpoint file"
            )
        trainer.load_state_dict(state)
    on_epoch = None
    if checkpoint is not None:
        path = Path(checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)

        def on_epoch(record: EpochRecord, t: Trainer) -> None:
            t.save(path)

    return trainer.fit(on_epoch)


def best_model_meta(trainer: Trainer) -> dict[str, Any]:
    """What `model_files.load_model` needs to rebuild the best model, plus its scores and config.

    The scores are the best epoch's validation figures, on its `val_examples` images
    (trials.parquet's `val_*`); the test result is the trial's row.
    """
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
        "val_nat_acc": best.val_nat_acc,
        "val_rob_acc": best.val_rob_acc,
        "val_stability": best.val_stability,
        "val_examples": best.val_examples,
        "train_config": trainer.config.model_dump(mode="json"),
    }
