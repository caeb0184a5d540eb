"""One trial of a search, and the rules that judge it: the one home of each.

Every table, report, sink and plot asks this module what a trial's status is, which of its
epochs counts (the best by robust accuracy, as the paper's tables select), what its result
is (that epoch's weights on the whole test split once it finished), when WAR's λ_t
settled, which trial of a search is the best, what its cost in device-seconds is and how
it is labelled. The tune layer builds a `TrialMeta` for each trial; `TrialMeta.from_row`
rebuilds one from a `trials.parquet` row, so a finished search replays through the same code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from wartune.results.store import TRIAL_KEY_COLUMNS


@dataclass(frozen=True)
class TrialMeta:
    """What describes a trial (not what it measured): the key columns of every table."""

    search: str
    trial_id: str
    strategy: str
    model: str
    width: float
    dataset: str
    objective: str
    eps: float
    seed: int
    epochs_planned: int
    lambda_setting: float | None  # the fixed λ; None for WAR
    zeta_from: str | None
    zeta_used: float | None  # WAR's target ζ; None for a fixed λ
    cpus: float
    gpus: float
    device: str = "cpu"
    precision: str | None = None  # fp32 / bf16 / fp16 as the trial resolved it; None before its first result
    graphs: str | None = None  # how its step ran (Trainer.graph_mode); None before its first result
    checkpoint: str | None = None  # the best model's folder, relative to the search folder
    model_dir: str | None = None  # the same folder, absolute, on the driver
    restarts: int = 0
    stack: str | None = None  # the Ray trial that trained it as a member of a stack (tune/stacks.py); None: alone

    def key_columns(self) -> dict[str, Any]:
        """The columns every per-trial table starts with (`store.TRIAL_KEY_COLUMNS`)."""
        return {name: getattr(self, name) for name in TRIAL_KEY_COLUMNS}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        return trial_label(self.as_dict())

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TrialMeta:
        """The meta of a trial as `trials.parquet` recorded it (its planned epochs: those it ran)."""
        return cls(
            **{name: row[name] for name in TRIAL_KEY_COLUMNS},
            epochs_planned=int(row.get("epochs") or 0),
            lambda_setting=row.get("lambda_setting"),
            zeta_from=row.get("zeta_from"),
            zeta_used=row.get("zeta_used"),
            cpus=float(row.get("cpus") or 1.0),
            gpus=float(row.get("gpus") or 0.0),
            device=row.get("device") or "cpu",
            precision=row.get("precision"),
            graphs=row.get("graphs"),
            checkpoint=row.get("checkpoint"),
            restarts=int(row.get("restarts") or 0),
            stack=row.get("stack"),
        )


def is_finite(value: Any) -> bool:
    """A real number that is neither NaN nor infinite (a bool is not a metric)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def trial_label(t: Mapping[str, Any], seed: bool = False) -> str:
    """`00003 wrn10-1 λ=6` or `00004 wrn10-2 WAR ζ=4.21`: how progress, plots and MLflow name a
    trial (`00001-2`: member 2 of stack 00001); with `seed`, `00003 wrn10-1 λ=6 seed 1` (a
    search that repeats each setting)."""
    if t.get("lambda_setting") is not None:
        lam = f"λ={t['lambda_setting']:g}"
    else:
        lam = f"WAR ζ={t.get('zeta_used') or 0:g}"
    ray_id, dash, member = t["trial_id"].partition("-")  # a stack member's id ends in `-<place>`
    return f"{ray_id[-5:]}{dash}{member} {t['model']} {lam}" + (f" seed {t['seed']}" if seed else "")


def trial_status(reported: str, error: str | None, epochs_done: int, epochs_planned: int) -> str:
    """The status tables record: an error turns `finished` into `failed`; a trial ended
    before its planned epochs (by ASHA) is `stopped`."""
    if reported == "finished" and error:
        return "failed"
    if reported == "finished" and epochs_done < epochs_planned:
        return "stopped"
    return reported


def device_seconds(wall: float, device: str, cpus: float, gpus: float) -> float:
    """Compute cost: GPU share × wall on a GPU, CPUs × wall on CPU (Table 3's unit)."""
    return wall * (gpus if device == "cuda" and gpus > 0 else cpus)


def best_epoch_row(rows: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The epoch with the highest robust accuracy (the earliest on ties): a trial's result."""
    return max(rows, key=lambda r: (r["rob_acc"] if is_finite(r["rob_acc"]) else -math.inf, -r["epoch"]))


CHANCE_FACTOR = 1.5  # natural accuracy below this many times chance: the net has not learned


def below_chance(nat_acc: Any, num_classes: int) -> bool:
    """A natural accuracy of a net that has not learned (under `CHANCE_FACTOR` × chance)."""
    return is_finite(nat_acc) and nat_acc < CHANCE_FACTOR / num_classes


def at_chance(trials: list[dict[str, Any]], num_classes: int) -> list[dict[str, Any]]:
    """The finished trials whose result is at chance natural accuracy: their stability (a net
    that predicts one class is perfectly stable) and ζ carry no decision."""
    return [t for t in trials if t.get("status") == "finished" and below_chance(t.get("nat_acc"), num_classes)]


def best_trial(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished trial with the highest robust accuracy (the paper's selection rule)."""
    done = [t for t in trials if t["status"] == "finished" and t["rob_acc"] is not None]
    return max(done, key=lambda t: t["rob_acc"]) if done else None


def best_by_autoattack(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished trial with the highest AutoAttack robust accuracy, among those the search's
    end attacked (`final_attack`); None when it attacked none. PGD-20 can rank them otherwise."""
    attacked = [t for t in trials if t["status"] == "finished" and is_finite(t.get("aa_rob_acc"))]
    return max(attacked, key=lambda t: t["aa_rob_acc"]) if attacked else None


# What the search's end adds to a trial row (tune/final_verdict.py): AutoAttack's robust accuracy,
# its test examples and its device-seconds. A sink rebuilding the row keeps them.
FINAL_ATTACK_COLUMNS = ("aa_rob_acc", "aa_examples", "aa_seconds")


def final_attack_of(trial: Mapping[str, Any] | None) -> dict[str, Any]:
    """The row's AutoAttack columns (None for a trial not attacked, or not recorded yet)."""
    return {k: (trial or {}).get(k) for k in FINAL_ATTACK_COLUMNS}


# A finished trial's result: its best epoch's weights attacked once on the whole test split.
# The trainable reports these keys under FULL_SPLIT_RESULT; trials.parquet keeps them as columns.
FULL_SPLIT_RESULT = "full_split_eval"
FULL_SPLIT_KEYS = ("nat_acc", "rob_acc", "stability", "lipschitz", "eval_examples")


def full_split_of(trial: Mapping[str, Any]) -> dict[str, Any] | None:
    """The full-split figures a trials.parquet row holds (None when it holds per-epoch ones):
    a resumed search or a replay to MLflow starts from them."""
    if trial.get("metrics_from") != "full_split":
        return None
    return {k: trial[k] for k in FULL_SPLIT_KEYS}


def lambda_settled_epoch(rows: list[Mapping[str, Any]], tolerance: float = 0.1) -> int | None:
    """The first epoch from which λ_t stays within ±`tolerance` (relative) of its final value.

    Every step's λ_t of every epoch from there on must be in the band, which an epoch's
    `lambda_min` and `lambda_max` decide; the final value is the last epoch's `lambda_last`.
    None when even the last epoch strays (λ_t had not settled) or there are no epochs.
    """
    rows = sorted(rows, key=lambda r: r["epoch"])
    if not rows:
        return None
    final = rows[-1]["lambda_last"]
    band = tolerance * abs(final)
    settled = None
    for row in reversed(rows):
        if abs(row["lambda_min"] - final) > band or abs(row["lambda_max"] - final) > band:
            break
        settled = row["epoch"]
    return settled


@dataclass(frozen=True)
class TrialSummary:
    """A trial's outcome: its result (full split when it finished), per-epoch figures, ζ, λ and cost."""

    epochs: int
    best_epoch: int | None
    nat_acc: float | None
    rob_acc: float | None
    stability: float | None
    lipschitz: float | None
    eval_examples: int | None
    metrics_from: str | None  # "full_split" or "best_epoch": what nat_acc, rob_acc, stability are
    best_epoch_nat_acc: float | None
    best_epoch_rob_acc: float | None
    best_epoch_stability: float | None
    final_nat_acc: float | None
    final_rob_acc: float | None
    final_stability: float | None
    lambda_final: float | None
    lambda_settled_epoch: int | None
    war_skipped_steps: int
    zeta: float | None
    zeta_step_std: float | None
    wall_seconds: float
    device_seconds: float

    @classmethod
    def of(cls, rows: list[Mapping[str, Any]], meta: TrialMeta, full_split: Mapping[str, Any] | None = None) -> TrialSummary:
        """From the trial's epoch rows and, once it finished, its full-split figures (`FULL_SPLIT_KEYS`)."""
        rows = sorted(rows, key=lambda r: r["epoch"])
        best = best_epoch_row(rows) if rows else {}
        final = rows[-1] if rows else {}
        result = full_split or best
        wall = float(sum(r.get("wall_seconds") or 0.0 for r in rows))
        return cls(
            epochs=len(rows),
            best_epoch=best.get("epoch"),
            **{k: result.get(k) for k in FULL_SPLIT_KEYS},
            metrics_from="full_split" if full_split else ("best_epoch" if rows else None),
            **{f"best_epoch_{k}": best.get(k) for k in ("nat_acc", "rob_acc", "stability")},
            **{f"final_{k}": final.get(k) for k in ("nat_acc", "rob_acc", "stability")},
            lambda_final=final.get("lambda_last"),
            lambda_settled_epoch=lambda_settled_epoch(rows) if meta.lambda_setting is None else None,
            war_skipped_steps=int(sum(r.get("war_skipped_steps") or 0 for r in rows)),
            zeta=final.get("zeta"),
            zeta_step_std=final.get("zeta_step_std"),
            wall_seconds=wall,
            device_seconds=device_seconds(wall, meta.device, meta.cpus, meta.gpus),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
