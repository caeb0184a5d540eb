"""Every configuration as a validated pydantic model, and YAML loading with clear errors.

Configuration is validated once, here at the edge; inner code receives typed objects.
A bad key or value becomes a `ConfigError` whose one-line message names the key and
what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wartune.data import dataset_info
from wartune.errors import ConfigError, WartuneError
from wartune.models import check_model_name
from wartune.schedules import ScheduleName

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(ge=1)]
ObjectiveName = Literal["trades", "madry"]
_M = TypeVar("_M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AttackSettings(_Strict):
    """Training attack: PGD L∞; ε and step default to the dataset's."""

    eps: PositiveFloat | None = None
    step: PositiveFloat | None = None
    steps: PositiveInt = 10


class EvalSettings(_Strict):
    """Evaluation attack: PGD-20 by default, CE with a uniform random start."""

    eps: PositiveFloat | None = None
    step: PositiveFloat | None = None
    steps: PositiveInt = 20
    max_examples: PositiveInt | None = None


class FixedLambda(_Strict):
    """λ held constant for the whole run."""

    kind: Literal["fixed"] = "fixed"
    value: NonNegFloat


class WARLambda(_Strict):
    """λ_t adapted every step towards the ratio ζ (Algorithm 1)."""

    kind: Literal["war"] = "war"
    zeta: PositiveFloat
    alpha: PositiveFloat = 0.1
    lambda0: NonNegFloat = 0.0


LambdaSpec = Annotated[FixedLambda | WARLambda, Field(discriminator="kind")]


class TrainingSettings(_Strict):
    """What a single run and a whole search share: data, objective, optimisation, attacks."""

    dataset: str = "digits"
    data_dir: Path | None = None
    objective: ObjectiveName = "trades"
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 0.1
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: NonNegFloat = 2e-4
    schedule: ScheduleName = "exp-decay"
    attack: AttackSettings = AttackSettings()
    eval: EvalSettings = EvalSettings()
    seed: int = 0

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        dataset_info(v)
        return v


class TrainConfig(TrainingSettings):
    """One adversarial-training run: the shared settings plus a model and a λ controller."""

    model: str = "wrn10-1"
    lam: LambdaSpec = FixedLambda(value=6.0)
    device: str = "auto"
    threads: PositiveInt | None = None

    @field_validator("lam", mode="before")
    @classmethod
    def _number_is_fixed(cls, v: Any) -> Any:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return {"kind": "fixed", "value": v}
        return v

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        check_model_name(v)
        return v


class Resources(_Strict):
    """Per-trial resources: CPUs and a (fractional) share of a GPU, e.g. 0.25."""

    cpu: PositiveFloat = 1.0
    gpu: NonNegFloat = 0.0


class LambdaRange(_Strict):
    """A continuous λ range for Optuna."""

    low: NonNegFloat
    high: PositiveFloat
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> LambdaRange:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


Strategy = Literal["grid", "optuna", "war", "fixed", "compare"]


class SearchSpace(TrainingSettings):
    """A named search: a strategy over λ (and optionally model widths) plus the training settings."""

    name: str = "search"
    description: str = ""
    strategy: Strategy = "grid"
    model: str | list[str] = "wrn10-1"
    lam: list[NonNegFloat] | LambdaRange | NonNegFloat | None = Field(default=None, alias="lambda")
    zeta_from: str | None = None
    thin_model: str | None = None  # compare: the cheap net that calibrates λ and ζ
    alpha: PositiveFloat = 0.1
    trials: PositiveInt | None = None
    max_concurrent: PositiveInt | None = None
    resources: Resources = Resources()
    scheduler: Literal["none", "asha"] = "none"

    @field_validator("model")
    @classmethod
    def _known_models(cls, v: str | list[str]) -> str | list[str]:
        names = [v] if isinstance(v, str) else v
        if not names:
            raise ValueError("give at least one model")
        for name in names:
            check_model_name(name)
        return v

    @model_validator(mode="after")
    def _strategy_needs(self) -> SearchSpace:
        lam = self.lam
        if self.strategy == "grid" and not (isinstance(lam, list) and lam):
            raise ValueError("strategy 'grid' needs 'lambda' as a non-empty list, e.g. [6, 9, 12]")
        if self.strategy == "optuna" and not isinstance(lam, LambdaRange):
            raise ValueError("strategy 'optuna' needs 'lambda' as {low, high, log}")
        if self.strategy == "optuna" and not isinstance(self.model, str) and len(self.model) > 1:
            raise ValueError("strategy 'optuna' tunes one model per search: give a single 'model'")
        if self.strategy == "fixed" and not isinstance(lam, int | float):
            raise ValueError("strategy 'fixed' needs 'lambda' as one number")
        if self.strategy == "compare" and not (isinstance(lam, list) and lam and self.thin_model):
            raise ValueError("strategy 'compare' needs 'thin_model' and 'lambda' as a non-empty list (the grid)")
        if self.thin_model is not None:
            check_model_name(self.thin_model)
        if self.strategy == "war" and not self.zeta_from:
            raise ValueError("strategy 'war' needs 'zeta_from' (a ζ registry key such as wrn34-0.5)")
        return self

    @property
    def models(self) -> list[str]:
        return [self.model] if isinstance(self.model, str) else list(self.model)

    @property
    def lambdas(self) -> list[float]:
        """The grid's λ values (or the one fixed value)."""
        if isinstance(self.lam, list):
            return [float(v) for v in self.lam]
        if isinstance(self.lam, int | float):
            return [float(self.lam)]
        return []

    def train_config(self, model: str, lam: Any, device: str = "auto") -> TrainConfig:
        """The engine config of one trial of this search."""
        shared = {name: getattr(self, name) for name in TrainingSettings.model_fields}
        return TrainConfig(**shared, model=model, lam=lam, device=device, threads=max(1, int(self.resources.cpu)))


def describe_validation_error(err: ValidationError, model: type[BaseModel]) -> str:
    """One line for the first problem: the dotted key, what is wrong, what is allowed."""
    first = err.errors()[0]
    # pydantic adds union-member tags to the location (list[...], LambdaRange, float, ...)
    tags = {"constrained-float", "float", "int", "str", "bool", "none", "LambdaRange"}
    loc = [
        str(p)
        for p in first["loc"]
        if not (str(p) in tags or "[" in str(p) or str(p).startswith("function-"))
    ]
    key = ".".join(loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        allowed = sorted(f.alias or n for n, f in model.model_fields.items())
        return f"unknown key {key!r}; allowed keys: {', '.join(allowed)}"
    msg = first["msg"].removeprefix("Value error, ")
    if "input" in first and first["type"] not in ("missing",) and not isinstance(first["input"], dict):
        return f"{key}: {msg} (got {first['input']!r})"
    return f"{key}: {msg}"


def validate(model: type[_M], data: dict[str, Any], source: str) -> _M:
    """Validate `data` as `model`, turning the first problem into a one-line ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {describe_validation_error(err, model)}") from None
    except WartuneError as err:  # raised inside a validator (unknown model, dataset)
        raise ConfigError(f"{source}: {err}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping, with a one-line error for unreadable or malformed files."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read {str(path)!r}: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path.name}:{where} not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a mapping of keys to values at the top level")
    return data

