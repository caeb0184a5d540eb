"""Model registry: every network is reachable by a short name, which is also its ζ key.

Names: `wrnD-W` (WideResNet, depth D = 6n + 4, widen factor W, fractional allowed; `wrn28-10`
is RobustBench's default), `resnet18-W` and `preactresnet18-W` (the CIFAR baselines, width W
scaling every stage), `densenetD-bc-kK` (DenseNet-BC, growth rate K), `cnn-W`, `mlp-W`, and
`smallcnn` (TRADES' MNIST network, one fixed size).

A user's own network needs no change to wartune, in either of two ways (as timm's
`register_model`):
- `module.path:factory-W` names a factory `factory(num_classes=, in_channels=, width=)` in an
  importable module, at width W (1 when left out). The name carries the import, so every
  process that builds the model (a Ray trial on any node) finds it; the ζ registry keys it by
  this name, width included.
- `@wartune.register_model("mynet")` on such a factory registers the family `mynet-W` in the
  process that imports it: for the plain-Python API (`train`, a notebook), or a search whose
  trials import the module themselves.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from wartune.engine.models.densenet import DenseNetBC
from wartune.engine.models.resnet import ResNet18
from wartune.engine.models.small import MLP, SmallCNN, TradesSmallCNN
from wartune.engine.models.wideresnet import WideResNet
from wartune.errors import ModelNameError

_NUMBER = r"(\d+(?:\.\d+)?)"


@dataclass(frozen=True)
class ModelFamily:
    """One registered family: its name pattern, an example, its constructor, the smallest image it takes."""

    pattern: re.Pattern[str]
    example: str
    build: Callable[[re.Match[str], int, int, int], nn.Module]
    width: Callable[[re.Match[str]], float]
    min_image_size: int = 1


def _wrn(m: re.Match[str], num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return WideResNet(int(m[1]), float(m[2]), num_classes, in_channels)


def _densenet(m: re.Match[str], num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return DenseNetBC(int(m[1]), int(m[2]), num_classes, in_channels)


def _resnet18(m: re.Match[str], num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return ResNet18(float(m[1]), num_classes, in_channels)


def _preact_resnet18(m: re.Match[str], num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return ResNet18(float(m[1]), num_classes, in_channels, preact=True)


def _cnn(m: re.Match[str], num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return SmallCNN(int(m[1]), num_classes, in_channels)


def _mlp(m: re.Match[str], num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return MLP(int(m[1]), num_classes, in_channels * image_size * image_size)


def _trades_small_cnn(m: re.Match[str], num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return TradesSmallCNN(num_classes, in_channels, image_size)


FAMILIES: dict[str, ModelFamily] = {
    "wrn": ModelFamily(re.compile(rf"wrn(\d+)-{_NUMBER}"), "wrn34-10", _wrn, lambda m: float(m[2])),
    "densenet": ModelFamily(
        re.compile(r"densenet(\d+)-bc-k(\d+)"), "densenet40-bc-k12", _densenet, lambda m: float(m[2])
    ),
    "resnet18": ModelFamily(re.compile(rf"resnet18-{_NUMBER}"), "resnet18-1", _resnet18, lambda m: float(m[1])),
    "preactresnet18": ModelFamily(re.compile(rf"preactresnet18-{_NUMBER}"), "preactresnet18-1", _preact_resnet18, lambda m: float(m[1])),
    "cnn": ModelFamily(re.compile(r"cnn-(\d+)"), "cnn-64", _cnn, lambda m: float(m[1])),
    "mlp": ModelFamily(re.compile(r"mlp-(\d+)"), "mlp-256", _mlp, lambda m: float(m[1])),
    # one size; its width is its first convolution's channels, as cnn-W's
    "smallcnn": ModelFamily(re.compile(r"smallcnn"), "smallcnn", _trades_small_cnn, lambda m: 32.0, min_image_size=16),
}


# A factory of the user's: `factory(num_classes=, in_channels=, width=)` -> nn.Module.
Factory = Callable[..., nn.Module]
_OWN = re.compile(rf"(?P<module>[A-Za-z_][\w.]*):(?P<factory>[A-Za-z_]\w*)(?:-{_NUMBER})?")


def _family_of(name: str, factory: Factory, pattern: re.Pattern[str], width_group: int) -> ModelFamily:
    """A family built by a user's factory; one line when it fails or builds no network."""

    def build(m: re.Match[str], num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        try:
            model = factory(num_classes=num_classes, in_channels=in_channels, width=float(m[width_group] or 1))
        except Exception as err:  # noqa: BLE001 - the user's code: any failure is theirs, said in one line
            raise ModelNameError(f"model {m[0]!r}: its factory failed ({type(err).__name__}: {err})") from None
        if not isinstance(model, nn.Module):
            raise ModelNameError(f"model {m[0]!r}: its factory returned {type(model).__name__}, not a torch nn.Module")
        return model

    return ModelFamily(pattern, f"{name}-1", build, lambda m: float(m[width_group] or 1))


def register_model(name: str) -> Callable[[Factory], Factory]:
    """Register `factory(num_classes=, in_channels=, width=)` as the family `name-W` (`name`: letters,
    digits and `_`, not a family already known)."""
    if not re.fullmatch(r"[A-Za-z_]\w*", name) or name in FAMILIES:
        raise ModelNameError(f"cannot register model family {name!r}: use letters, digits and _, not a known family")

    def register(factory: Factory) -> Factory:
        FAMILIES[name] = _family_of(name, factory, re.compile(rf"{name}-{_NUMBER}"), 1)
        return factory

    return register


def _own(name: str) -> tuple[ModelFamily, re.Match[str]] | None:
    """`module.path:factory-W`: the user's factory, imported by the name."""
    m = _OWN.fullmatch(name)
    if m is None:
        return None
    try:
        module = importlib.import_module(m["module"])
    except Exception as err:  # noqa: BLE001 - ImportError, or the module's own code failing
        raise ModelNameError(f"model {name!r}: cannot import {m['module']!r} ({type(err).__name__}: {err})") from None
    factory = getattr(module, m["factory"], None)
    if not callable(factory):
        raise ModelNameError(f"model {name!r}: {m['module']!r} has no function {m['factory']!r}")
    return _family_of(name, factory, _OWN, 3), m

BUILTIN = tuple(FAMILIES.values())  # the families wartune ships; `register_model` adds to FAMILIES


def _match(name: str) -> tuple[ModelFamily, re.Match[str]]:
    for family in FAMILIES.values():
        m = family.pattern.fullmatch(name)
        if m is not None:
            return family, m
    if (own := _own(name)) is not None:
        return own
    known = ", ".join(f"{k} (e.g. {f.example})" for k, f in FAMILIES.items())
    raise ModelNameError(f"unknown model {name!r}; known families: {known}, or your own as module.path:factory-W")


def check_model_name(name: str, image_size: int | None = None) -> None:
    """Validate a model name (and its depth / width), and that it takes `image_size` pixels, without building it."""
    family, m = _match(name)
    if image_size is not None and image_size < family.min_image_size:
        raise ModelNameError(
            f"model {name!r} needs images of at least {family.min_image_size} pixels; this dataset's are {image_size}"
        )
    if family in (FAMILIES["wrn"], FAMILIES["densenet"]):
        depth = int(m[1])
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ModelNameError(
                f"model {name!r}: depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 40, ...)"
            )
    if family.width(m) <= 0:
        raise ModelNameError(f"model {name!r}: width must be positive")


def is_own_model(name: str) -> bool:
    """A network of the user's: `module.path:factory-W`, or of a family `register_model` added."""
    return _OWN.fullmatch(name) is not None or _match(name)[0] not in BUILTIN


def model_width(name: str) -> float:
    """The family's width knob (WRN widen factor, DenseNet growth rate, hidden units)."""
    family, m = _match(name)
    return family.width(m)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Build a fresh, randomly initialised network from its registry name."""
    check_model_name(name)
    family, m = _match(name)
    return family.build(m, num_classes, in_channels, image_size)


__all__ = ["FAMILIES", "check_model_name", "create_model", "is_own_model", "model_width", "register_model"]
