"""How the model is called: numeric precision, memory layout and compilation, resolved once.

`auto` is bf16 for a net of at least `BF16_MIN_PARAMETERS` parameters on a CUDA GPU that
supports it, and fp32 for smaller nets and elsewhere (`resolve_precision` says why). Mixed precision lives in
the model call only: inputs stay fp32 (PGD's ε-ball projection and the sign of the input
gradient are taken in fp32), are cast inside autocast, and the logits come back as fp32,
so the losses, the KL target and λ's arithmetic never see a half-precision number. On fp32
CPU nothing is wrapped and the model is called exactly as before.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from wartune.engine.attacks import PGDConfig

PrecisionSetting = Literal["auto", "fp32", "bf16", "fp16"]
Precision = Literal["fp32", "bf16", "fp16"]

DTYPES: dict[Precision, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FP16_ATTACK_LOSS_SCALE = 2.0**8  # a power of 2: scaling is exact, and 256 keeps fp16's backward in range
# Below this many parameters `auto` keeps fp32 on a GPU. Provisional, from the first H200
# figures (eager, before CUDA graphs): bf16 + channels_last made WRN-34-10 (46.2 M) 1.76x
# faster than fp32, but left WRN-34-0.5 (0.12 M) slower than a plain fp32 loop: a thin net
# is bound by kernel launches, which autocast's casts add to, not by arithmetic, which is
# all bf16 saves. Between the two nothing is measured yet; `benchmarks/gpu_step.py` prints
# fp32 and bf16 for both with graphs, and this boundary is to be set from those figures.
BF16_MIN_PARAMETERS = 2_000_000


def resolve_precision(setting: PrecisionSetting, device: torch.device, model: nn.Module | None = None) -> Precision:
    """The precision a run trains at.

    `auto` is bf16 on a CUDA GPU that has it for a net of at least `BF16_MIN_PARAMETERS`
    parameters (all nets when `model` is not given), fp32 otherwise: bf16 halves the
    arithmetic's cost, which pays only where arithmetic is what a step waits for.
    """
    if setting != "auto":
        return setting
    if not (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return "fp32"
    if model is not None and sum(p.numel() for p in model.parameters()) < BF16_MIN_PARAMETERS:
        return "fp32"
    return "bf16"


class AutocastModel(nn.Module):
    """Calls the wrapped model under autocast (and channels_last): fp32 in, fp32 logits out.

    The wrapped model is a submodule, so `.train()`/`.eval()` and `parameters()` reach it;
    the trainer checkpoints the unwrapped model, whose state-dict keys stay unprefixed.
    """

    def __init__(self, model: nn.Module, precision: Precision, channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.dtype = DTYPES[precision]
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # no weight-cast cache: a CUDA graph must not capture casts cached across calls
        cast = self.dtype != torch.float32
        with torch.autocast(x.device.type, dtype=self.dtype, enabled=cast, cache_enabled=False):
            logits = self.model(x)
        return logits.float() if cast else logits  # uncast (channels_last alone): the model's own dtype


def model_call(
    model: nn.Module, precision: Precision, device: torch.device, compile: bool = False, channels_last: bool | None = None
) -> nn.Module:
    """The module every forward pass goes through (attack, losses, evaluation).

    channels_last (by default on CUDA, where convolutions run faster in it) puts the
    weights in that layout in place (the caller's model is the one trained) and converts
    the inputs at the call; `compile` wraps in `torch.compile`.
    """
    if channels_last is None:
        channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    call: nn.Module = torch.compile(model) if compile else model  # type: ignore[assignment]
    if precision == "fp32" and not channels_last:
        return call
    return AutocastModel(call, precision, channels_last)


def attack_at(attack: PGDConfig, precision: Precision) -> PGDConfig:
    """The attack as run at `precision`: fp16 scales its loss so input gradients keep their sign."""
    return dataclasses.replace(attack, loss_scale=FP16_ATTACK_LOSS_SCALE if precision == "fp16" else 1.0)


def grad_scaler(precision: Precision, device: torch.device) -> torch.amp.GradScaler:
    """fp16's loss scaling; a disabled scaler (a plain backward and step) for fp32 and bf16."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
