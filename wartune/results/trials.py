"""One trial of a search, and the rules that judge it: the one home of each.

Every table, report, sink and plot asks this module what a trial's status is, which of its
epochs counts (the best by validation robust accuracy, as the paper's tables select, but on
held-out training images), what its result is (that epoch's weights read once on the whole
test split when it finished), when WAR's λ_t settled, which trial of a search is the best
(by validation, never by test), what its cost in device-seconds is and how it is labelled. The tune layer builds a `TrialMeta` for each trial; `TrialMeta.from_row`
rebuilds one from a `trials.parquet` row, so a finished search replays through the same code.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from wartune.results.intervals import pack_flags, proportion_interval, unpack_flags
from wartune.results.store import INTERVAL_FIGURES, TRIAL_KEY_COLUMNS


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
    selected_on: str = "validation"  # "test": begun by 0.2.0 or before, its choices read the test split
    # the optimiser's and training attack's settings (a search beyond λ tunes them; tune/dimensions.py)
    lr: float | None = None
    weight_decay: float | None = None
    attack_steps: int | None = None
    attack_step: float | None = None
    batch_size: int | None = None

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
            selected_on=row.get("selected_on") or "test",
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
    """The epoch with the highest validation robust accuracy (the earliest on ties): whose weights
    are the trial's result."""
    return max(rows, key=lambda r: (r["val_rob_acc"] if is_finite(r["val_rob_acc"]) else -math.inf, -r["epoch"]))


CHANCE_FACTOR = 1.5  # natural accuracy below this many times chance: the net has not learned


def below_chance(nat_acc: Any, num_classes: int) -> bool:
    """A natural accuracy of a net that has not learned (under `CHANCE_FACTOR` × chance)."""
    return is_finite(nat_acc) and nat_acc < CHANCE_FACTOR / num_classes


def at_chance(trials: list[dict[str, Any]], num_classes: int) -> list[dict[str, Any]]:
    """The finished trials whose best epoch is at chance natural accuracy (on validation): their
    stability (a net that predicts one class is perfectly stable) and ζ carry no decision."""
    return [t for t in trials if t.get("status") == "finished" and below_chance(t.get("val_nat_acc"), num_classes)]


def best_trial(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished trial with the highest validation robust accuracy (the paper's selection
    rule, on held-out training images: the test split then reports it, unchosen)."""
    done = [t for t in trials if t["status"] == "finished" and is_finite(t.get("val_rob_acc"))]
    return max(done, key=lambda t: t["val_rob_acc"]) if done else None


def rivals_within_noise(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The finished trials whose validation robust accuracy reaches the best trial's 95 % interval
    (its Wilson lower bound): the validation split cannot tell them from the winner, so the
    search's choice among them is a coin toss. Empty when the best one stands clear."""
    best = best_trial(trials)
    if best is None:
        return []
    lo, _ = proportion_interval(best["val_rob_acc"], best.get("val_examples"))
    if lo is None:
        return []
    return [t for t in trials if t["status"] == "finished" and t["trial_id"] != best["trial_id"]
            and is_finite(t.get("val_rob_acc")) and t["val_rob_acc"] >= lo]  # fmt: skip


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
# The trainable reports these keys under TEST_RESULT; trials.parquet keeps them as columns.
TEST_RESULT = "test_eval"
TEST_KEYS = ("test_nat_acc", "test_rob_acc", "test_stability", "test_lipschitz", "test_examples",
             "test_robust", "test_correct")  # fmt: skip


def stored_test_reading(trial: Mapping[str, Any]) -> dict[str, Any] | None:
    """The test figures a trials.parquet row holds (None before the trial finished): a resumed
    search or a replay to MLflow starts from them."""
    if not is_finite(trial.get("test_rob_acc")):
        return None
    return {k: trial.get(k) for k in TEST_KEYS}


def encode_flags(flags: Any) -> str:
    """Per-example booleans as text a Parquet string column and Ray's JSON log both keep (base64 of the packed bits)."""
    return base64.b64encode(pack_flags(flags)).decode("ascii")


def decode_flags(text: str, n: int) -> Any:
    """`encode_flags`' booleans back, as a numpy array of `n`."""
    return unpack_flags(base64.b64decode(text), n)


def with_intervals(figures: Mapping[str, Any], split: str) -> dict[str, float | None]:
    """`<split>_<figure>_lo` / `_hi`: the 95 % Wilson interval of each accuracy and the stability
    of `figures` (which hold `<split>_<figure>` and `<split>_examples`)."""
    n = figures.get(f"{split}_examples")
    out: dict[str, float | None] = {}
    for figure in INTERVAL_FIGURES:
        out[f"{split}_{figure}_lo"], out[f"{split}_{figure}_hi"] = proportion_interval(figures.get(f"{split}_{figure}"), n)
    return out


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
    """A trial's outcome: its best epoch's validation figures, its test result once it finished,
    ζ, λ and cost (trials.parquet's columns beyond the key ones)."""

    epochs: int
    best_epoch: int | None
    selected_on: str
    val: dict[str, Any]  # val_nat_acc, val_rob_acc, val_stability, val_examples and their intervals
    final_val: dict[str, Any]  # final_val_nat_acc, ... : the last epoch's
    test: dict[str, Any]  # TEST_KEYS and their intervals; None each before the trial finished
    lambda_final: float | None
    lambda_settled_epoch: int | None
    war_skipped_steps: int
    zeta: float | None
    zeta_step_std: float | None
    wall_seconds: float
    device_seconds: float

    @classmethod
    def of(cls, rows: list[Mapping[str, Any]], meta: TrialMeta, test: Mapping[str, Any] | None = None) -> TrialSummary:
        """From the trial's epoch rows and, once it finished, its test reading (`TEST_KEYS`)."""
        rows = sorted(rows, key=lambda r: r["epoch"])
        best = best_epoch_row(rows) if rows else {}
        final = rows[-1] if rows else {}
        wall = float(sum(r.get("wall_seconds") or 0.0 for r in rows))
        val = {f"val_{k}": best.get(f"val_{k}") for k in (*INTERVAL_FIGURES, "examples")}
        test_figures = {k: (test or {}).get(k) for k in TEST_KEYS}
        return cls(
            epochs=len(rows),
            best_epoch=best.get("epoch"),
            selected_on=meta.selected_on,
            val={**val, **with_intervals(val, "val")},
            final_val={f"final_val_{k}": final.get(f"val_{k}") for k in INTERVAL_FIGURES},
            test={**test_figures, **with_intervals(test_figures, "test")},
            lambda_final=final.get("lambda_last"),
            lambda_settled_epoch=lambda_settled_epoch(rows) if meta.lambda_setting is None else None,
            war_skipped_steps=int(sum(r.get("war_skipped_steps") or 0 for r in rows)),
            zeta=final.get("zeta"),
            zeta_step_std=final.get("zeta_step_std"),
            wall_seconds=wall,
            device_seconds=device_seconds(wall, meta.device, meta.cpus, meta.gpus),
        )

    def as_dict(self) -> dict[str, Any]:
        """The summary as flat trials.parquet columns."""
        flat = asdict(self)
        for part in ("val", "final_val", "test"):
            flat.update(flat.pop(part))
        return flat
