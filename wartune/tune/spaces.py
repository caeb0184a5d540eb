"""Search spaces: the `SearchSpace` model, and YAML files (shipped with wartune or any path).

`--space lambda_grid` finds `search_spaces/lambda_grid.yaml` inside the installed package;
a value ending in .yaml/.yml, or naming an existing file, is read as a path. CLI flags are
merged in before validation, so a bad flag is reported exactly like a bad YAML key.
A space is the tune layer's config: the engine's `TrainingSettings` plus what a search
adds (strategy, λ grid or range, models, budget, resources).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationInfo, field_validator, model_validator

from wartune.engine.config import (
    NonNegFloat,
    PositiveFloat,
    PositiveInt,
    StrictModel,
    TrainConfig,
    TrainingSettings,
    WARLambda,
    WARRule,
    check_model_fits,
    validate,
)
from wartune.engine.stacking import unstackable_family, unstackable_settings
from wartune.errors import ConfigError
from wartune.results.pareto import OBJECTIVES, objective_name
from wartune.tune.dimensions import Range, check_dimensions


class Resources(StrictModel):
    """Per-trial resources: CPUs and a (fractional) share of a GPU, e.g. 0.25."""

    cpu: PositiveFloat = 1.0
    gpu: NonNegFloat = 0.0


class LambdaRange(StrictModel):
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


# The `war:` controllers a space can name. `paper` is Algorithm 1 exactly (the block's field
# defaults); `epoch` spreads α 0.3 over each epoch's steps, the one variant that beat Algorithm 1
# on both data sets and both widths of docs/war-study.md, so it is what a space without `war:` runs.
WAR_PRESETS: dict[str, dict[str, Any]] = {"paper": {}, "epoch": {"alpha_per": "epoch", "alpha": 0.3}}
DEFAULT_WAR = "epoch"
_PRESET_LINES = {
    "paper": "paper (Algorithm 1: α 0.1 per step, λ_0 0, each step's l_nat/l_rob)",
    "epoch": "epoch (α 0.3 per epoch, spread over its steps; λ_0 0, each step's l_nat/l_rob)",
}


def war_block(value: Any) -> Any:
    """A `war:` value with a preset's name replaced by its block (other values unchanged), so
    CLI overrides such as `war.alpha` merge into the named controller rather than replace it."""
    return dict(WAR_PRESETS[value]) if isinstance(value, str) and value in WAR_PRESETS else value


class WarSettings(WARRule):
    """A space's `war:` block: how WAR runs, wherever a search resolves ζ (war, transfer, compare).

    A block's keys are set against Algorithm 1 (its defaults); a name is a preset
    (`WAR_PRESETS`): `war: paper` is Algorithm 1 exactly, `war: epoch` the default. `lambda0:
    thin` starts λ at the thin net's best λ from the same ζ registry entry.
    """

    lambda0: NonNegFloat | Literal["thin"] = 0.0

    @model_validator(mode="before")
    @classmethod
    def _preset_by_name(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data in WAR_PRESETS:
                return war_block(data)
            keys = ", ".join(sorted(cls.model_fields))
            raise ValueError(f"give 'paper' (Algorithm 1), 'epoch' (the default) or a block of {keys}")
        return data

    @classmethod
    def preset(cls, name: str) -> WarSettings:
        return cls.model_validate(name)

    @field_validator("lambda0", mode="before")
    @classmethod
    def _number_or_thin(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "thin":
            raise ValueError("give a number >= 0 or 'thin' (the thin net's best λ)")
        return v

    def spec(self, zeta: float, thin_lambda: float) -> WARLambda:
        """The engine's WAR spec towards `zeta`; `thin_lambda` is the calibration's best λ."""
        lambda0 = thin_lambda if self.lambda0 == "thin" else self.lambda0
        return WARLambda(zeta=zeta, lambda0=lambda0, **self.model_dump(exclude={"lambda0"}))

    def describe(self) -> str:
        """One line naming the controller: `paper` (Algorithm 1), or the block's settings that differ from it."""
        changed: dict[str, Any] = self.model_dump(exclude_defaults=True)
        for name, block in WAR_PRESETS.items():
            if changed == block:
                return _PRESET_LINES[name] + (" (the default)" if name == DEFAULT_WAR else "")
        if self.ratio == "window" and self.window is None:
            changed["window"] = "one epoch"
        shown = (str(v).lower() if isinstance(v, bool) else str(v) for v in changed.values())
        return "war: {" + ", ".join(f"{k}: {v}" for k, v in zip(changed, shown, strict=True)) + "}"


Strategy = Literal["grid", "optuna", "pbt", "war", "fixed", "compare"]
SAMPLED = ("optuna", "pbt")  # strategies that draw λ from a range, `trials` times
STACKED_STRATEGIES = ("grid", "fixed", "war")  # their trials are known before the search starts: the param space stacks them
# The ways of choosing λ a compare can run side by side (`strategies:`), in table order.
CompareStrategy = Literal["untuned", "grid", "optuna", "pbt", "war"]
COMPARE_STRATEGIES: tuple[str, ...] = ("untuned", "grid", "optuna", "pbt", "war")


class PbtSettings(StrictModel):
    """A space's `pbt:` block: how Population Based Training moves λ during training.

    Every `interval` epochs the bottom `quantile` of the population (by the epoch's robust
    accuracy) copies the weights of a top-`quantile` trial and moves on with that trial's λ
    perturbed (× 0.8 or × 1.2, kept in the λ range) or, with probability `resample`, drawn
    afresh. `synch` waits for the whole population at each interval, so every decision
    sees the same epoch of every trial (Ray's synchronous PBT).
    """

    interval: PositiveInt | None = None  # epochs between perturbations (default: a quarter of the epochs)
    quantile: Annotated[float, Field(gt=0, le=0.5)] = 0.25
    resample: Annotated[float, Field(ge=0, le=1)] = 0.25
    synch: bool = True

    def every(self, epochs: int) -> int:
        return self.interval or max(1, epochs // 4)
_VARIANT = re.compile(r"[A-Za-z0-9_]{1,30}")

# A search's name is its folder under --out: one plain path component, never `.` or `..`.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


def folder_name(text: str) -> str:
    """`text` as a search's folder name: what `_NAME` refuses (`:` of a user's `module:factory`
    model, `/`) becomes `_`, and it is cut to 100 characters."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:100]


def check_search_name(name: str) -> str:
    """Refuse a name that would put the search folder outside --out (or not be portable)."""
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError("not a folder name: use 1 to 100 letters, digits, '.', '_' or '-' (no '/', not '.' or '..')")
    return name


class SearchSpace(TrainingSettings):
    """A named search: a strategy over λ (and optionally model widths) plus the training settings."""

    name: str = "search"
    description: str = ""
    strategy: Strategy = "grid"
    model: str | list[str] = "wrn10-1"
    lam: list[NonNegFloat] | LambdaRange | NonNegFloat | None = Field(default=None, alias="lambda")
    zeta_from: str | None = None
    thin_model: str | None = None  # compare: the cheap net that calibrates λ and ζ
    war: WarSettings = Field(default_factory=lambda: WarSettings.preset(DEFAULT_WAR))
    # compare: more WAR runs beside `war`, each named (its strategy reads `war-<name>`)
    war_variants: dict[str, WarSettings] = {}
    strategies: list[CompareStrategy] | None = None  # compare: which to run (default: all)
    seeds: PositiveInt = 1  # every setting is trained with seeds seed .. seed+seeds-1
    trials: PositiveInt | None = None
    max_concurrent: PositiveInt | None = None
    # train up to this many trials of one model (differing in λ and seed) as one grouped network
    # (tune/stacks.py); 1: every trial alone
    stack: PositiveInt = 1
    # dimensions beyond λ (lr, weight_decay, eps, attack_step(s), batch_size): lists or ranges (dimensions.py)
    search: dict[str, list[float] | Range] = {}
    resources: Resources = Resources()
    scheduler: Literal["none", "asha"] = "none"
    pbt: PbtSettings = PbtSettings()
    # optuna: trade these trials.parquet columns off in one multi-objective study (None: robust
    # accuracy alone); each `name` or `name:direction` (results/pareto.py's OBJECTIVES), kept as names
    objectives: list[str] | None = None
    sampler: Literal["tpe", "nsga2"] | None = None  # optuna's sampler; None is TPE
    # the search's end: standard AutoAttack on the best `final_attack_top` trials of each strategy,
    # model and seed by PGD-20 (None: every finished trial); tune/final_verdict.py
    final_attack: Literal["none", "autoattack"] = "none"
    final_attack_top: PositiveInt | None = None

    @model_validator(mode="before")
    @classmethod
    def _alpha_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "alpha" in data:
            raise ConfigError(f"'alpha' moved into the war block: write war: {{alpha: {data['alpha']!r}}}")
        return data

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return check_search_name(v)

    @field_validator("war_variants")
    @classmethod
    def _variant_names(cls, v: dict[str, WarSettings]) -> dict[str, WarSettings]:
        for name in v:
            if not _VARIANT.fullmatch(name):
                raise ValueError(f"variant name {name!r}: use 1 to 30 letters, digits or '_'")
        return v

    @field_validator("strategies")
    @classmethod
    def _some_strategies(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError(f"give at least one of {', '.join(COMPARE_STRATEGIES)}")
        if v is not None and len(set(v)) != len(v):
            raise ValueError("a strategy is named twice")
        return v

    @field_validator("objectives")
    @classmethod
    def _objective_columns(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [objective_name(text) for text in v]

    @field_validator("model")
    @classmethod
    def _known_models(cls, v: str | list[str], info: ValidationInfo) -> str | list[str]:
        names = [v] if isinstance(v, str) else v
        if not names:
            raise ValueError("give at least one model")
        for name in names:
            check_model_fits(name, info.data.get("dataset"))
        return v

    @model_validator(mode="after")
    def _strategy_needs(self) -> SearchSpace:
        lam = self.lam
        if self.strategy == "grid" and not (isinstance(lam, list) and lam):
            raise ValueError("strategy 'grid' needs 'lambda' as a non-empty list, e.g. [6, 9, 12]")
        if self.strategy in SAMPLED and not isinstance(lam, LambdaRange):
            raise ValueError(f"strategy {self.strategy!r} needs 'lambda' as {{low, high, log}}")
        if self.strategy in SAMPLED and not isinstance(self.model, str) and len(self.model) > 1:
            raise ValueError(f"strategy {self.strategy!r} tunes one model per search: give a single 'model'")
        if self.strategy == "pbt" and self.scheduler != "none":
            raise ValueError("strategy 'pbt' is its own scheduler: leave 'scheduler' at none")
        if self.strategy != "optuna" and (self.objectives is not None or self.sampler is not None):
            raise ValueError("'objectives' and 'sampler' are for strategy 'optuna' (a grid plots its trade-off front anyway)")
        if self.objectives is not None and not 2 <= len(set(self.objectives)) == len(self.objectives) <= 3:
            raise ValueError(f"'objectives' needs 2 or 3 distinct names of {', '.join(OBJECTIVES)}")
        if self.strategy == "fixed" and not isinstance(lam, int | float):
            raise ValueError("strategy 'fixed' needs 'lambda' as one number")
        if self.strategy == "compare" and not (isinstance(lam, list) and lam and self.thin_model):
            raise ValueError("strategy 'compare' needs 'thin_model' and 'lambda' as a non-empty list (the grid)")
        if self.thin_model is not None:
            check_model_fits(self.thin_model, self.dataset)
        if self.strategy == "war" and not self.zeta_from:
            raise ValueError("strategy 'war' needs 'zeta_from' (a ζ registry key such as wrn34-0.5)")
        if self.strategy in SAMPLED and self.seeds > 1:
            raise ValueError(
                f"strategy {self.strategy!r} runs one population per seed: use compare (it runs one per seed), "
                "or one search per --seed"
            )
        if self.strategy != "compare" and (self.war_variants or self.strategies):
            raise ValueError("'war_variants' and 'strategies' are compare keys (strategy 'compare')")
        if self.war_variants and "war" not in self.compare_strategies:
            raise ValueError("'war_variants' run beside WAR: add war to 'strategies'")
        if not self.validation.held_out:
            raise ValueError("validation held_out false is how wartune marks a trial that 0.2.0 began (its choices "
                             "read the test split); a new search always holds a validation split out")  # fmt: skip
        check_dimensions(self.search, self.strategy, self.stack)
        if self.stack > 1:
            self._check_stackable()
        return self

    def _check_stackable(self) -> None:
        """What `stack` > 1 needs: stackable trials (ASHA stops a stack's members one by one,
        `member_rungs.py`)."""
        if self.strategy == "pbt" and (self.trials or 1) > self.stack:
            raise ValueError(f"PBT over a stack holds the whole population in one stack: give stack >= trials "
                             f"({self.trials}), or stack 1 for Ray's PBT over lone trials")  # fmt: skip
        whys = [unstackable_settings(self.precision, self.objective)]
        whys += [unstackable_family(model) for model in [*self.models, *([self.thin_model] if self.thin_model else [])]]
        if why := next(filter(None, whys), None):
            raise ValueError(f"{why}: use stack 1")

    @property
    def seed_values(self) -> list[int]:
        """The seeds every setting is trained with: seed, seed+1, …, seed+seeds−1."""
        return [self.seed + i for i in range(self.seeds)]

    @property
    def compare_strategies(self) -> list[str]:
        """The strategies a compare runs, in table order."""
        chosen = self.strategies or list(COMPARE_STRATEGIES)
        return [s for s in COMPARE_STRATEGIES if s in chosen]

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


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping, with a one-line error for unreadable or malformed files.

    Whatever the file holds (binary data, another encoding, nesting deep enough to exhaust
    the parser's recursion), the user gets one line naming it, never a traceback.
    """
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read search space file {str(path)!r}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"search space file {str(path)!r} is not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path.name}:{where} not valid YAML") from None
    except RecursionError:
        raise ConfigError(f"{path.name}: nested too deeply to be a search space") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a mapping of keys to values at the top level")
    return data


def spaces_dir() -> Path:
    """The folder of shipped search spaces inside the installed package."""
    return Path(str(resources.files("wartune") / "search_spaces"))


def shipped_spaces() -> list[str]:
    return sorted(p.stem for p in spaces_dir().glob("*.yaml"))


def space_path(ref: str) -> Path:
    """Resolve a space name or path to a file, or fail naming the shipped spaces.

    A value that looks like a path (a .yaml/.yml suffix, a folder part, an existing
    file) must be a regular file; anything else is a shipped space's name.
    """
    candidate = Path(ref)
    if candidate.suffix in (".yaml", ".yml") or len(candidate.parts) > 1 or candidate.is_file():
        _check_regular_file(candidate)
        return candidate
    path = spaces_dir() / f"{ref}.yaml"
    if path.is_file():
        return path
    if candidate.exists():
        _check_regular_file(candidate)
    raise ConfigError(f"unknown search space {ref!r}; shipped: {', '.join(shipped_spaces())} (or a path to a .yaml file)")


def _check_regular_file(path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"search space file {str(path)!r} does not exist")
    if path.is_dir():
        raise ConfigError(f"search space {str(path)!r} is a directory: give a .yaml file or a shipped space name")
    if not path.is_file():
        raise ConfigError(f"search space {str(path)!r} is not a regular file")


def _given(flags: dict[str, Any]) -> dict[str, Any]:
    """Only the flags that were given: None means "not given", at any depth."""
    given: dict[str, Any] = {}
    for key, value in flags.items():
        if isinstance(value, dict):
            value = _given(value) or None
        if value is not None:
            given[key] = value
    return given


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides win; nested mappings (resources, attack, eval) merge key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_space(ref: str, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Read, merge CLI overrides into, and validate one search space."""
    path = space_path(ref)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    data["war"] = war_block(data.get("war", DEFAULT_WAR))
    return validate(SearchSpace, _merge(data, _given(overrides or {})), source=path.name)
