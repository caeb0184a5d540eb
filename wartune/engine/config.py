"""The engine's configuration: validated pydantic models, and one-line validation errors.

Configuration is validated once, at the edge; inner code receives typed objects. A bad
key or value becomes a `ConfigError` whose one-line message names the key and what is
allowed. The threat model's defaults (ε, PGD step, training PGD steps) are resolved here
and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from wartune.engine.attacks import Norm, PGDConfig
from wartune.engine.data import dataset_info
from wartune.engine.graphs import GraphSetting
from wartune.engine.models import check_model_name, create_model, is_own_model
from wartune.engine.objectives import ObjectiveName, get_objective
from wartune.engine.precision import PrecisionSetting
from wartune.engine.schedules import ScheduleName
from wartune.engine.war_rules import RatioMode, WarRule
from wartune.errors import ConfigError, WartuneError

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(ge=1)]
_M = TypeVar("_M", bound=BaseModel)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ThreatSettings(StrictModel):
    """The threat model: the norm of the ball the attacks search, and its radius.

    L∞ (the default) takes the dataset's ε when `eps` is unset (8/255 on CIFAR); L2 has no
    dataset default, so it needs `eps` (RobustBench's CIFAR-10 L2 is 0.5). The training and
    evaluation attacks use this ε unless `attack.eps` / `eval.eps` set their own.
    """

    norm: Norm = "linf"
    eps: PositiveFloat | None = None

    @model_validator(mode="after")
    def _l2_needs_eps(self) -> ThreatSettings:
        if self.norm == "l2" and self.eps is None:
            raise ValueError("an L2 threat model needs its eps (e.g. {norm: l2, eps: 0.5}, RobustBench's on CIFAR-10)")
        return self


L2_STEP_FACTOR = 2.5  # under L2 a PGD step is 2.5 ε / steps unless set (Madry et al.'s rule for L2 attacks)


class AttackSettings(StrictModel):
    """Training attack: PGD in the threat model's ball; ε, step and steps default to the dataset's."""

    eps: PositiveFloat | None = None
    step: PositiveFloat | None = None
    steps: PositiveInt | None = None


class EvalSettings(StrictModel):
    """Evaluation attack: PGD-20 by default, CE with a uniform random start.

    `max_examples` sizes the per-epoch evaluation (the first N validation examples; the
    dataset's default when unset, see `TrainingSettings.eval_examples`), which chooses the best
    epoch; a finished trial's best weights are then evaluated once on the whole test split.
    """

    eps: PositiveFloat | None = None
    step: PositiveFloat | None = None
    steps: PositiveInt = 20
    max_examples: PositiveInt | None = None


class ValidationSettings(StrictModel):
    """The validation split every choice reads, carved from the training split (`engine/validation.py`).

    `examples` images or a `fraction` of the training split (the dataset's default when both are
    unset: 15 % of digits, 5,000 MNIST images, 1,000 on CIFAR-10/100 and SVHN), stratified by
    class and drawn by `seed`, so every trial of a search holds out the same images. `held_out`
    false marks a trial that wartune 0.2.0 or before began: its choices read the test split as
    they did then, and it is never set for a new one.
    """

    examples: int | None = None
    fraction: float | None = None
    seed: int = 0
    held_out: bool = True

    @field_validator("examples")
    @classmethod
    def _some_examples(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("a validation split needs at least one image per class: with none, the best epoch, "
                             "λ and ζ could only be chosen on the test split, which then no longer tests them")  # fmt: skip
        return v

    @field_validator("fraction")
    @classmethod
    def _a_fraction(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is not None and not 0 < v < 1:
            raise ValueError("a fraction of the training split is above 0 and below 1; with 0 the best epoch, λ and ζ "
                             "could only be chosen on the test split, which then no longer tests them")  # fmt: skip
        if v is not None and info.data.get("examples") is not None:
            raise ValueError("give examples or fraction, not both")
        return v


class FixedLambda(StrictModel):
    """λ held constant for the whole run."""

    kind: Literal["fixed"] = "fixed"
    value: NonNegFloat


class WARRule(StrictModel):
    """How WAR moves λ_t, shared by the engine's spec and a search space's `war:` block.

    The defaults are Algorithm 1 exactly: α = 0.1 per step, each step's own l_nat / l_rob,
    no hold, no bound. The other settings are `war_rules.war_rule_step`'s: `ratio: ema`
    (running averages of both losses), `ratio: window` (the means over the last `window`
    steps, default one epoch, as ζ is measured), `alpha_per: epoch` (α spread over an
    epoch's steps), `hold` (λ_0 kept until the ratio first reaches ζ) and `max_step` (the
    largest change of λ in one step). docs/war-study.md measures each.
    """

    alpha: PositiveFloat = 0.1
    alpha_per: Literal["step", "epoch"] = "step"
    ratio: RatioMode = "step"
    ema_beta: Annotated[float, Field(ge=0, lt=1)] = 0.9  # used by ratio: ema only
    window: PositiveInt | None = None  # ratio: window's steps; None: one epoch
    hold: bool = False
    max_step: PositiveFloat | None = None

    @field_validator("window")
    @classmethod
    def _window_needs_window_ratio(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and info.data.get("ratio") != "window":
            raise ValueError("a window is the number of steps of ratio: window; set ratio: window or drop it")
        return v

    def war_rule(self, zeta: float, steps_per_epoch: int) -> WarRule:
        """The engine's rule in per-step units: α / steps per epoch for `alpha_per: epoch`,
        the window in steps (one epoch's when unset)."""
        alpha = self.alpha / steps_per_epoch if self.alpha_per == "epoch" else self.alpha
        window = (self.window or steps_per_epoch) if self.ratio == "window" else 1
        return WarRule(zeta, alpha, self.ratio, self.ema_beta, window, self.hold, self.max_step)


class WARLambda(WARRule):
    """λ_t adapted every step towards the ratio ζ (Algorithm 1), starting from λ_0."""

    kind: Literal["war"] = "war"
    zeta: PositiveFloat
    lambda0: NonNegFloat = 0.0


LambdaSpec = Annotated[FixedLambda | WARLambda, Field(discriminator="kind")]


class TrainingSettings(StrictModel):
    """What a single run and a whole search share: data, objective, optimisation, attacks."""

    dataset: str = "digits"
    data_dir: Path | None = None
    # a fixed class-balanced subset of the training split (`data.training_subset`); None: all of it
    train_examples: PositiveInt | None = None
    objective: ObjectiveName = "trades"
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 0.1
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: NonNegFloat = 2e-4
    schedule: ScheduleName = "exp-decay"
    threat: ThreatSettings = ThreatSettings()
    attack: AttackSettings = AttackSettings()
    eval: EvalSettings = EvalSettings()
    validation: ValidationSettings = ValidationSettings()
    seed: int = 0
    precision: PrecisionSetting = "auto"  # auto: bf16 for a big net on a CUDA GPU that has it, else fp32
    compile: bool = False  # wrap the model in torch.compile
    graphs: GraphSetting = "auto"  # the step as a CUDA graph; auto: on CUDA (engine/graphs.py)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        dataset_info(v)
        return v

    @property
    def eps(self) -> float:
        """The training ε: the attack's own, else the threat model's, else the dataset's L∞ default (8/255 on CIFAR)."""
        return self.attack.eps or self.threat.eps or dataset_info(self.dataset).eps

    @property
    def step_size(self) -> float:
        """The training PGD step: the attack's own, else the dataset's L∞ default (0.007 on CIFAR),
        or 2.5 ε / steps under L2."""
        if self.attack.step:
            return self.attack.step
        if self.threat.norm == "l2":
            return L2_STEP_FACTOR * self.eps / self.train_steps
        return dataset_info(self.dataset).step_size

    @property
    def train_steps(self) -> int:
        """The training PGD's number of steps: the config's own, else the dataset's (40 on MNIST, 10 elsewhere)."""
        return self.attack.steps or dataset_info(self.dataset).train_steps

    @property
    def eval_examples(self) -> int | None:
        """Validation examples each epoch is evaluated on: the config's own, else the dataset's
        (1,000 on CIFAR-10/100 and SVHN; None = the whole validation split)."""
        return self.eval.max_examples or dataset_info(self.dataset).eval_examples

    def train_pgd(self) -> PGDConfig:
        """The training attack: ascends the objective's own loss from its reference start."""
        objective = get_objective(self.objective)
        steps = objective.attack_steps or self.train_steps
        step = objective.attack_step_ratio * self.eps if objective.attack_step_ratio else self.step_size
        return PGDConfig(self.eps, step, steps, objective.attack_loss, objective.attack_start, norm=self.threat.norm)

    def eval_pgd(self, eps: float | None = None) -> PGDConfig:
        """The evaluation PGD (CE, uniform start): the per-epoch one and `wartune evaluate`'s.

        With another `eps` the step keeps its ratio to ε, so PGD-20 stays the same attack;
        at the configured ε the step is exactly the configured one (ratio 1.0).
        """
        base_eps = self.eval.eps or self.threat.eps or self.eps
        if self.eval.step:
            step = self.eval.step
        elif self.threat.norm == "l2":
            step = L2_STEP_FACTOR * base_eps / self.eval.steps
        else:
            step = self.step_size
        radius = eps or base_eps
        return PGDConfig(radius, step * (radius / base_eps), self.eval.steps, loss="ce", start="uniform", norm=self.threat.norm)


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
    def _known_model(cls, v: str, info: ValidationInfo) -> str:
        check_model_fits(v, info.data.get("dataset"))
        return v


def check_model_fits(name: str, dataset: str | None) -> None:
    """A known model name that takes the dataset's images (smallcnn needs 16 pixels; digits has 8).
    A user's own network is built once, on the meta device (no memory, no arithmetic), so a
    factory that fails does so here, in one line, not in every trial."""
    check_model_name(name, dataset_info(dataset).image_size if dataset else None)
    if dataset and is_own_model(name):
        info = dataset_info(dataset)
        with torch.device("meta"):
            create_model(name, info.num_classes, info.in_channels, info.image_size)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field may hold, through Annotated, unions and containers."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _tags(model: type[BaseModel]) -> set[str]:
    """How pydantic names a union member in an error location: its class name or discriminator value."""
    literals = {str(f.default) for f in model.model_fields.values() if get_origin(f.annotation) is Literal}
    return {model.__name__} | literals


def _owner_of_key(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The (possibly nested) model whose fields the last part of an error location is checked against."""
    owners = [model]
    for part in map(str, loc[:-1]):
        fields = [f for m in owners for n, f in m.model_fields.items() if part in (n, f.alias)]
        if fields:
            owners = [m for f in fields for m in _models_in(f.annotation)]
        else:
            owners = [m for m in owners if part in _tags(m)] or owners
    return owners[0] if len(owners) == 1 else model


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
        owner = _owner_of_key(model, first["loc"])
        allowed = sorted(f.alias or n for n, f in owner.model_fields.items())
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
