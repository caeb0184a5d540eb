"""The layout of one trial's parameters, shared by the strategies, trainable and sinks.

A trial's Ray config is plain data:
    {"search", "strategy", "base": TrainConfig fields except model and λ,
     "model": str, "lam": float | {"kind": "war", ...}, "zeta_from", "resources"}
Strategies put `tune.grid_search` / distributions at "model" and "lam".
"""

from __future__ import annotations

from typing import Any

from wartune.config import SearchSpace, TrainConfig
from wartune.data import dataset_info
from wartune.models import model_width


def base_params(space: SearchSpace, device: str = "auto") -> dict[str, Any]:
    """TrainConfig fields shared by every trial of the search."""
    template = space.train_config(space.models[0], 0.0, device=device)
    return template.model_dump(mode="json", exclude={"model", "lam"})


def trial_params(space: SearchSpace, model: Any, lam: Any, zeta_from: str | None = None) -> dict[str, Any]:
    """A trial's config; `model` and `lam` may be Ray search-space objects."""
    return {
        "search": space.name,
        "strategy": space.strategy,
        "base": base_params(space),
        "model": model,
        "lam": lam,
        "zeta_from": zeta_from,
        "resources": space.resources.model_dump(),
    }


def labelled(lam: dict[str, Any], strategy: str) -> dict[str, Any]:
    """A λ spec that names the strategy it stands for (when one search mixes several)."""
    return {**lam, "strategy": strategy}


def train_config_of(params: dict[str, Any]) -> TrainConfig:
    """The engine config a trial runs."""
    lam = params["lam"]
    if isinstance(lam, dict):
        lam = {k: v for k, v in lam.items() if k != "strategy"}
    return TrainConfig.model_validate({**params["base"], "model": params["model"], "lam": lam})


def trial_meta(trial_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Descriptive columns of a trial, as the Parquet tables and MLflow want them."""
    base, lam = params["base"], params["lam"]
    eps = (base.get("attack") or {}).get("eps") or dataset_info(base["dataset"]).eps
    war = isinstance(lam, dict) and lam.get("kind") == "war"
    return {
        "search": params["search"],
        "trial_id": trial_id,
        "strategy": lam.get("strategy", params["strategy"]) if isinstance(lam, dict) else params["strategy"],
        "model": params["model"],
        "width": model_width(params["model"]),
        "dataset": base["dataset"],
        "objective": base["objective"],
        "eps": float(eps),
        "seed": int(base["seed"]),
        "epochs_planned": int(base["epochs"]),
        "lambda_setting": None if war else float(lam if not isinstance(lam, dict) else lam["value"]),
        "zeta_from": params.get("zeta_from"),
        "zeta_used": float(lam["zeta"]) if war else None,
        "cpus": float(params["resources"]["cpu"]),
        "gpus": float(params["resources"]["gpu"]),
    }
