"""The layout of one trial's parameters, shared by the strategies, the trainable and the callback.

Ray hands a trial plain data (it must pickle, and grid search and Optuna put their values
at `model` and `lam`):
    {"search", "strategy", "base": TrainConfig fields except model and λ,
     "model": str, "lam": float | {"kind": "fixed" | "war", ..., "strategy"?},
     "zeta_from", "resources": {"cpu", "gpu"}, "seed": int}
(`--seeds` makes `seed` a grid dimension beside `model` and `lam`.)
`TrialParams.parse` turns that into typed objects once; λ specs are always built from the
engine's `FixedLambda` / `WARLambda` models, never written out by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wartune.engine.config import FixedLambda, TrainConfig, WARLambda
from wartune.engine.models import model_width
from wartune.results.trials import TrialMeta
from wartune.results.zeta import ZetaEntry
from wartune.tune.dimensions import TUNED, with_tuned
from wartune.tune.spaces import Resources, SearchSpace, WarSettings

STRATEGY_LABEL = "strategy"  # the key a λ spec may carry when one search mixes strategies


def base_params(space: SearchSpace, device: str = "auto") -> dict[str, Any]:
    """TrainConfig fields shared by every trial of the search."""
    template = space.train_config(space.models[0], 0.0, device=device)
    return template.model_dump(mode="json", exclude={"model", "lam"})


def trial_params(space: SearchSpace, model: Any, lam: Any, zeta_from: str | None = None, seed: Any = None) -> dict[str, Any]:
    """A trial's config; `model`, `lam` and `seed` may be Ray search-space objects
    (`seed` None: the space's own seed, in `base`)."""
    return {
        "search": space.name,
        "strategy": space.strategy,
        "base": base_params(space),
        "model": model,
        "lam": lam,
        "zeta_from": zeta_from,
        "resources": space.resources.model_dump(),
        "seed": seed if seed is not None else space.seed,
    }


def lambda_value(spec: FixedLambda | WARLambda, strategy: str | None = None) -> dict[str, Any]:
    """A λ spec as a trial parameter, labelled with the strategy it stands for when one
    search mixes several (transfer's WAR beside the untuned λ; compare's grid + WAR)."""
    value = spec.model_dump(mode="json")
    return {**value, STRATEGY_LABEL: strategy} if strategy else value


def war_lambda(war: WarSettings, calibration: ZetaEntry, strategy: str | None = None) -> dict[str, Any]:
    """WAR as the space's `war:` block says, towards the calibration's ζ; `lambda0: thin`
    starts from the same calibration's best λ (ζ and that λ come from one registry entry)."""
    return lambda_value(war.spec(calibration.zeta, calibration.best_lambda), strategy)


def fixed_lambda(value: float, strategy: str | None = None) -> dict[str, Any]:
    return lambda_value(FixedLambda(value=value), strategy)


@dataclass(frozen=True)
class TrialParams:
    """A trial's parameters, typed: the engine config it runs and how the search labels it."""

    search: str
    strategy: str
    config: TrainConfig
    zeta_from: str | None
    resources: Resources

    @classmethod
    def parse(cls, params: dict[str, Any]) -> TrialParams:
        lam = params["lam"]
        strategy = params["strategy"]
        if isinstance(lam, dict):
            strategy = lam.get(STRATEGY_LABEL) or strategy
            lam = {k: v for k, v in lam.items() if k != STRATEGY_LABEL}
        base = params["base"]
        seed = params.get("seed", base["seed"])
        if "validation" not in base:  # a trial that wartune 0.2.0 or before began: it goes on choosing as it did
            base = {**base, "validation": {"held_out": False}}
        base = with_tuned(base, params.get(TUNED))  # the values a search beyond λ chose for this trial
        config = TrainConfig.model_validate({**base, "model": params["model"], "lam": lam, "seed": seed})
        return cls(params["search"], strategy, config, params.get("zeta_from"), Resources(**params["resources"]))

    def meta(self, trial_id: str, **state: Any) -> TrialMeta:
        """The trial's descriptive columns; `state` adds what the driver knows (device, restarts...)."""
        lam, config = self.config.lam, self.config
        return TrialMeta(
            search=self.search,
            trial_id=trial_id,
            strategy=self.strategy,
            model=config.model,
            width=model_width(config.model),
            dataset=config.dataset,
            objective=config.objective,
            eps=float(config.eps),
            seed=int(config.seed),
            epochs_planned=int(config.epochs),
            lambda_setting=lam.value if isinstance(lam, FixedLambda) else None,
            zeta_from=self.zeta_from,
            zeta_used=lam.zeta if isinstance(lam, WARLambda) else None,
            cpus=float(self.resources.cpu),
            gpus=float(self.resources.gpu),
            selected_on="validation" if config.validation.held_out else "test",
            lr=float(config.lr),
            weight_decay=float(config.weight_decay),
            attack_steps=int(config.train_pgd().steps),  # the attack it trained with (fgsm-rs: one step of 1.25 ε)
            attack_step=float(config.train_pgd().step_size),
            batch_size=int(config.batch_size),
            **state,
        )


def train_config_of(params: dict[str, Any]) -> TrainConfig:
    """The engine config a trial runs."""
    return TrialParams.parse(params).config
