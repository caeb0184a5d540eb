"""K copies of one architecture as one grouped network (HFTA, Wang et al., MLSys 2021).

A thin net's step is thousands of small kernels; K λ-trials of it stacked into one network
launch each kernel once for all K. The stack keeps the members apart exactly, with
PyTorch's own parts:

- `Conv2d(C_in, C_out, groups=g)` becomes `Conv2d(K·C_in, K·C_out, groups=K·g)`: member k's
  channels are the k-th block of each layer, and a group never reads another's block;
- `BatchNorm2d(C)` becomes `BatchNorm2d(K·C)`: statistics are per channel, so per member;
- `Linear(i, o)` becomes `GroupedLinear`: K weight matrices applied to K feature blocks.

Parameter-free layers that act per channel (ReLU, pooling, `Flatten`) need no change: a
flattened `[B, K·C, H, W]` keeps each member's features contiguous. Layers that mix channels
without parameters (DenseNet's concatenation) or draw randomness (dropout) cannot be
stacked; `stackable` names them. The input is member-major, `[K·B, C, H, W]` (member k's
batch is rows k·B to (k+1)·B), as are the logits (`StackedNet`), so the training attack and
the losses see an ordinary batch. docs/architecture.md says why grouped layers and not
`torch.func.vmap` (measured slower here: `benchmarks/stack_layout.py`).

Every stacked tensor is the members' tensors stacked along a new first axis and reshaped
(`stack_tensors`), so a member's weights, BN statistics and momentum come back out with one
reshape (`member_tensor`): the stack's state is its members' states, nothing more.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from wartune.engine.objectives import get_objective

STACKABLE_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
PER_CHANNEL_LAYERS = (
    nn.ReLU, nn.Flatten, nn.Sequential, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Identity,
)  # fmt: skip
UNSTACKABLE_MODELS = ("densenet", "smallcnn")  # channel concatenation; dropout


class GroupedLinear(nn.Module):
    """K `Linear(i, o)` layers on K feature blocks: `[B, K·i]` → `[B, K·o]`, one batched matmul."""

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.members = members
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = x.reshape(x.shape[0], self.members, -1).transpose(0, 1)  # [K, B, i]
        out = torch.bmm(blocks, self.weight.transpose(1, 2))  # [K, B, o]
        if self.bias is not None:
            out = out + self.bias[:, None, :]
        return out.transpose(0, 1).reshape(x.shape[0], -1)


def unstackable_family(model_name: str) -> str | None:
    """Why a model of this family cannot be stacked, known from its name alone (None: it may be)."""
    if model_name.split("-")[0].rstrip("0123456789") in UNSTACKABLE_MODELS:
        return f"{model_name} cannot be stacked: its layers mix members' channels or draw dropout masks"
    return None


def unstackable_settings(precision: str, objective: str) -> str | None:
    """Why trials with these settings cannot share a stack, whatever their model (None: they may)."""
    if precision == "fp16":
        return "fp16 cannot be stacked: one loss scaler would skip every member's step when one overflows (bf16 can)"
    if get_objective(objective).perturbs_weights:
        return f"{objective} cannot be stacked: each member's weights take their own proxy step"
    return None


def stackable(model_name: str, model: nn.Module) -> str | None:
    """Why `model` cannot be stacked (None when it can)."""
    if why := unstackable_family(model_name):
        return why
    for name, module in model.named_modules():
        if not isinstance(module, STACKABLE_LAYERS + PER_CHANNEL_LAYERS) and module is not model:
            if any(True for _ in module.parameters(recurse=False)) or isinstance(module, nn.Dropout):
                return f"{model_name} cannot be stacked: layer {name} ({type(module).__name__}) is not one a stack can group"
    return None


def _grouped_layer(layer: nn.Module, members: int) -> nn.Module:
    if isinstance(layer, nn.Conv2d):
        return nn.Conv2d(
            members * layer.in_channels, members * layer.out_channels, layer.kernel_size,
            layer.stride, layer.padding, layer.dilation, members * layer.groups,
            layer.bias is not None, layer.padding_mode,
        )  # fmt: skip
    if isinstance(layer, nn.BatchNorm2d):
        return nn.BatchNorm2d(
            members * layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats
        )
    if isinstance(layer, nn.Linear):
        return GroupedLinear(members, layer.in_features, layer.out_features, layer.bias is not None)
    raise TypeError(f"no grouped form of {type(layer).__name__}")


def stack_tensors(tensors: Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The members' tensors as the stack holds them (`like`'s shape): stacked, then reshaped.
    A 0-dim tensor (BN's batch count, the same for every member) is the first member's."""
    if tensors[0].dim() == 0:
        return tensors[0].clone()
    return torch.stack(list(tensors)).reshape(like.shape)


def member_tensor(stacked: torch.Tensor, member: int, like: torch.Tensor) -> torch.Tensor:
    """Member `member`'s slice of a stacked tensor, in the lone model's shape (`like`'s)."""
    if like.dim() == 0:
        return stacked.detach().clone()
    return stacked.detach().reshape(-1, *like.shape)[member].clone()


def stack_models(models: Sequence[nn.Module]) -> nn.Module:
    """One grouped network holding `models` (one architecture) as its members, their
    weights and BN statistics copied in; the members themselves are left as they were."""
    members = len(models)
    grouped = copy.deepcopy(models[0])
    layers = [name for name, module in grouped.named_modules() if isinstance(module, STACKABLE_LAYERS)]
    for name in layers:
        parent, _, attr = name.rpartition(".")
        owner = grouped.get_submodule(parent) if parent else grouped
        setattr(owner, attr, _grouped_layer(grouped.get_submodule(name), members))
    first = next(models[0].parameters())
    grouped.to(device=first.device, dtype=first.dtype)
    load_members(grouped, [m.state_dict() for m in models])
    return grouped


def load_members(grouped: nn.Module, states: Sequence[dict[str, torch.Tensor]]) -> None:
    """Copy the members' state dicts (a lone model's keys) into the grouped network."""
    target = grouped.state_dict()
    with torch.no_grad():
        for key, value in target.items():
            value.copy_(stack_tensors([s[key] for s in states], value))


def member_state(grouped: nn.Module, member: int, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Member `member`'s state dict, in the lone model's keys and shapes (`like`)."""
    return {key: member_tensor(value, member, like[key]) for key, value in grouped.state_dict().items()}


class StackedNet(nn.Module):
    """Calls a grouped network on a member-major batch: `[K·B, C, H, W]` → `[K·B, classes]`.

    Member k's images enter as the k-th channel block and its logits leave as rows k·B to
    (k+1)·B, so an attack or a loss written for one model runs on the stack unchanged, and
    the sum of the members' losses has each member's own gradient.
    """

    def __init__(self, grouped: nn.Module, members: int) -> None:
        super().__init__()
        self.grouped = grouped
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.members
        batch = x.shape[0] // k
        blocks = x.reshape(k, batch, *x.shape[1:]).transpose(0, 1)  # [B, K, C, H, W]
        logits = self.grouped(blocks.reshape(batch, k * x.shape[1], *x.shape[2:]))  # [B, K·classes]
        return logits.reshape(batch, k, -1).transpose(0, 1).reshape(k * batch, -1)
