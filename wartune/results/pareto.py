"""The trade-off front: the trials no other trial beats on every objective at once.

λ trades natural accuracy against robustness (the paper's Sec. 3), so a search has no
single best trial but a front of non-dominated ones. `trials.parquet` marks them
(`pareto`) and names what they were compared on (`pareto_by`): a multi-objective search's
`objectives`, otherwise robust and natural accuracy, so every search shows its front.

Fronts are per model: a width sweep trades λ off within each width, and a wider net
dominating a thin one says nothing about λ. Only finished trials with every objective
measured take part; a trial stopped early or failed is never on the front.

The columns a search can be judged on, and the direction each is better in, are declared
once here (`OBJECTIVES`): the Optuna study's directions, the front and `--objectives` read them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wartune.results.trials import is_finite

# The trials.parquet columns a search can trade off, each with the direction it is better in.
OBJECTIVES = {"rob_acc": "max", "nat_acc": "max", "stability": "max"}
# What a search without `objectives` is judged on: the paper's two accuracies.
DEFAULT_OBJECTIVES = ("rob_acc", "nat_acc")


def objective_name(text: str) -> str:
    """An objective as a user writes it, `rob_acc` or with its direction, `rob_acc:max`: its column.

    Raises ValueError (a space key's or flag's one-line error) naming the columns and directions.
    """
    name, _, direction = text.strip().partition(":")
    if name not in OBJECTIVES:
        known = ", ".join(f"{n} ({d})" for n, d in OBJECTIVES.items())
        raise ValueError(f"unknown objective {name!r}: use {known} (judged on their validation figures, trials.parquet's val_*)")
    if direction and direction != OBJECTIVES[name]:
        raise ValueError(f"{name} is better when larger: write {name} or {name}:{OBJECTIVES[name]}, not {text.strip()!r}")
    return name


def directions(objectives: Sequence[str]) -> list[str]:
    """Each objective's direction ("max" or "min"), in order."""
    return [OBJECTIVES[name] for name in objectives]


def dominates(a: Sequence[float], b: Sequence[float], maximise: bool = True) -> bool:
    """`a` is at least as good as `b` on every objective and better on one."""
    if not maximise:
        a, b = [-x for x in a], [-x for x in b]
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def pareto_mask(points: Sequence[Sequence[float]], maximise: bool = True) -> list[bool]:
    """For each point, whether no other point dominates it.

    Equal points do not dominate each other (nor does a point itself), so ties are on the
    front together. Quadratic in the number of points, a search's trials: tens, not millions.
    """
    return [not any(dominates(q, p, maximise) for q in points) for p in points]


def pareto_objectives(objectives: Sequence[str] | None) -> tuple[str, ...]:
    """The columns a search's front is over: its objectives, or robust and natural accuracy."""
    return tuple(objectives) if objectives else DEFAULT_OBJECTIVES


def objective_column(name: str) -> str:
    """The trials.parquet column an objective is judged on: its validation figure (`val_rob_acc`),
    as every choice is; the test split only reports."""
    return f"val_{name}"


def _competes(trial: Mapping[str, Any], objectives: Sequence[str]) -> bool:
    return trial.get("status") == "finished" and all(is_finite(trial.get(objective_column(name))) for name in objectives)


def mark_pareto(trials: Sequence[Mapping[str, Any]], objectives: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The trials (as new rows, in order) with `pareto` and `pareto_by` set, a front per model."""
    by = pareto_objectives(objectives)
    signs = [1.0 if d == "max" else -1.0 for d in directions(by)]  # every objective as one to maximise
    marked = [{**t, "pareto": False, "pareto_by": ",".join(by)} for t in trials]
    for model in {t["model"] for t in marked}:
        rows = [t for t in marked if t["model"] == model and _competes(t, by)]
        points = [[sign * row[objective_column(name)] for sign, name in zip(signs, by, strict=True)] for row in rows]
        for row, on_front in zip(rows, pareto_mask(points), strict=True):
            row["pareto"] = on_front
    return marked
