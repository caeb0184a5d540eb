"""Search dimensions beyond λ: what a space's `search:` block may tune, and how each reaches a trial.

Adversarial training is tuned in λ together with the learning rate, weight decay, the
training ε and its attack's steps and step size, and the batch size (Mendes et al. 2023 tune
exactly these). A space names them as trials.parquet names its columns:

    search:
      lr: {low: 0.02, high: 0.2, log: true}    # a range: Optuna samples it
      weight_decay: [0.0001, 0.0005]           # a list: a grid, or Optuna's choice among them

Each trial's chosen values travel in its config under `tuned` and replace the space's own
before the engine config is built (`TrialParams.parse`), so the trial, its rows and its
MLflow run all carry them. A tuned training `eps` leaves the evaluation at the threat
model's ε and step (pinned in the trials' base config), so every trial is judged by one
attack. PBT draws each dimension at the start and moves it with λ at every exploit (`pbt.py`:
a list's neighbour, a range's value × 0.8 or × 1.2 kept inside it); the batch size and the
epochs shape a run's schedule, so PBT cannot move them. Stacked members differ in λ and seed
alone: a `search:` block is refused with a stack, in one line.
"""

from __future__ import annotations

from typing import Any

from wartune.engine.config import StrictModel

TUNED = "tuned"  # a trial config's key holding its values of the `search:` dimensions

# dimension -> (its place in the engine config, whether it takes whole numbers)
DIMENSIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    "lr": (("lr",), False),
    "weight_decay": (("weight_decay",), False),
    "eps": (("attack", "eps"), False),  # the training attack's ε; evaluation keeps the threat model's
    "attack_step": (("attack", "step"), False),
    "attack_steps": (("attack", "steps"), True),
    "batch_size": (("batch_size",), True),
    "epochs": (("epochs",), True),  # each trial's schedule runs over its own epochs
}
FIXED_IN_A_RUN = ("batch_size", "epochs")  # a run's steps and schedule: PBT cannot move them mid-run


class Range(StrictModel):
    """A range Optuna samples: uniform, or log-uniform with `log`."""

    low: float
    high: float
    log: bool = False


def check_dimensions(search: dict[str, list[float] | Range], strategy: str, stack: int) -> None:
    """Refuse (ValueError, one line) a `search:` block the strategy cannot run."""
    for name, values in search.items():
        if name not in DIMENSIONS:
            raise ValueError(f"search: cannot tune {name!r}; tunable: {', '.join(DIMENSIONS)} (and lambda, its own key)")
        whole = DIMENSIONS[name][1]
        bounds = [values.low, values.high] if isinstance(values, Range) else list(values)
        if not bounds or any(v < 0 or (v == 0 and name != "weight_decay") for v in bounds):
            raise ValueError(f"search.{name}: give positive values (weight_decay may be 0)")
        if whole and any(float(v) != int(v) for v in bounds):
            raise ValueError(f"search.{name}: takes whole numbers")
        if isinstance(values, Range):
            if values.low >= values.high or (values.log and values.low <= 0):
                raise ValueError(f"search.{name}: low must be below high (and above 0 for a log range)")
            if strategy not in ("optuna", "pbt"):
                raise ValueError(f"search.{name}: a range is sampled by strategy optuna or pbt; strategy {strategy!r} needs a list")
    if search and strategy == "compare":
        raise ValueError(f"search: strategy 'compare' tunes λ alone; use grid, optuna or pbt to search {', '.join(search)}")
    if strategy == "pbt" and (fixed := [name for name in search if name in FIXED_IN_A_RUN]):
        raise ValueError(f"search: PBT cannot move {' or '.join(fixed)} in the middle of a run; use grid or optuna for them")
    if search and stack > 1:
        raise ValueError("search: the members of a stack differ in λ and seed alone; use stack 1 to search "
                         f"{', '.join(search)}")  # fmt: skip


def domains(search: dict[str, list[float] | Range], strategy: str) -> dict[str, Any]:
    """Ray's search space of the dimensions: a grid's lists; Optuna's and PBT's ranges and choices."""
    from ray import tune

    space: dict[str, Any] = {}
    for name, values in search.items():
        whole = DIMENSIONS[name][1]
        if isinstance(values, Range):
            if whole:
                space[name] = (tune.lograndint if values.log else tune.randint)(int(values.low), int(values.high) + 1)
            else:
                space[name] = (tune.loguniform if values.log else tune.uniform)(values.low, values.high)
        else:
            typed = _typed(name, values)
            space[name] = tune.grid_search(typed) if strategy not in ("optuna", "pbt") else tune.choice(typed)
    return space


def _typed(name: str, values: list[float]) -> list[int] | list[float]:
    return [int(v) for v in values] if DIMENSIONS[name][1] else [float(v) for v in values]


def mutations(search: dict[str, list[float] | Range]) -> dict[str, Any]:
    """PBT's `hyperparam_mutations` of the dimensions: a list moves to a neighbouring value,
    a range is perturbed (× 0.8 or × 1.2) or drawn again from its domain."""
    return {name: domains({name: values}, "pbt")[name] if isinstance(values, Range) else _typed(name, values)
            for name, values in search.items()}  # fmt: skip


def within_ranges(tuned: dict[str, Any], search: dict[str, list[float] | Range]) -> dict[str, Any]:
    """A PBT exploit's perturbed values put back inside their ranges, whole where they must be
    (Ray's × 0.8 / × 1.2 knows neither bound nor type; a list's values are its own already)."""
    out = dict(tuned)
    for name, values in search.items():
        if isinstance(values, Range) and name in out:
            value = min(max(float(out[name]), values.low), values.high)
            out[name] = int(round(value)) if DIMENSIONS[name][1] else value
    return out


def most_epochs(search: dict[str, list[float] | Range], epochs: int) -> int:
    """The most epochs a trial of the search trains: what ASHA's last rung and the progress
    total count to (`epochs` unless the search tunes them)."""
    values = search.get("epochs")
    if values is None:
        return epochs
    return int(values.high if isinstance(values, Range) else max(values))


def with_tuned(base: dict[str, Any], tuned: dict[str, Any] | None) -> dict[str, Any]:
    """The engine config's fields with a trial's tuned values in their places."""
    if not tuned:
        return base
    merged = {**base}
    for name, value in tuned.items():
        path, _ = DIMENSIONS[name]
        if len(path) == 1:
            merged[path[0]] = value
        else:
            merged[path[0]] = {**(merged.get(path[0]) or {}), path[1]: value}
    return merged
