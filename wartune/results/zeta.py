"""The ζ registry: what a thin network's best λ and its ζ = l_nat / l_rob were.

WAR (Algorithm 1) needs ζ measured once on a cheap, thin network at its best λ; the
registry keeps it, so any later run on a wider network can look it up by the thin model's
name. It keeps every calibration: one entry per (model, dataset, objective, ε) and search
that measured it, never overwritten by another search (a compare's calibration beside the
user's own); the same search calibrating again (a resumed compare) replaces its own entry.
Where one model has several entries for a run's setting, `lookup` refuses to guess: the
run names one, `MODEL@SEARCH` or `MODEL@latest`. It is a Parquet table (default
`runs/zeta.parquet`); one built-in row from the paper (WRN-34-0.5, CIFAR-10, TRADES,
ε = 8/255: λ 6, ζ 30) is always present with `source=paper`.

Writes take an exclusive lock on a sibling `.lock` file, re-read the table, upsert and
replace the file atomically, so two processes writing at once lose no row. A registry
file that is not such a table (corrupt, another program's Parquet) is refused in one
line, and never overwritten.
"""

from __future__ import annotations

import fcntl
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wartune.errors import WartuneError
from wartune.results.seeds import MeanSd, group, mean_of, repeated
from wartune.results.store import ZETA_SCHEMA, read_rows, write_table
from wartune.results.trials import below_chance, best_trial


@dataclass(frozen=True)
class ZetaEntry:
    """One calibration: the thin model's best λ and the ζ it converged to."""

    model: str
    dataset: str
    objective: str
    eps: float
    best_lambda: float
    zeta: float
    zeta_step_std: float | None
    rob_acc: float | None
    nat_acc: float | None
    stability: float | None
    search: str
    source: str
    created_at: str
    # what the choice of best λ stood on (None: an entry from before they were kept, or the paper's):
    val_rob_acc: float | None = None  # the chosen trial's validation robust accuracy (its seeds' mean)
    calibration_lambdas: str | None = None  # the λ grid it chose from, e.g. "1,3,6,9,12,18"
    calibration_epochs: int | None = None
    calibration_seeds: int | None = None

    def key(self) -> tuple[str, str, str, float]:
        return (self.model, self.dataset, self.objective, round(self.eps, 9))

    def describe(self) -> str:
        return f"{self.model} on {self.dataset}, {self.objective}, ε {self.eps:g}"

    def identity(self) -> tuple[str, str, str, float, str]:
        """One calibration: its setting and the search that measured it."""
        return (*self.key(), self.search)

    @property
    def reference(self) -> str:
        """How a run names this entry: `MODEL@SEARCH`."""
        return f"{self.model}@{self.search}"


PAPER_ENTRY = ZetaEntry(
    model="wrn34-0.5",
    dataset="cifar10",
    objective="trades",
    eps=8 / 255,
    best_lambda=6.0,
    zeta=30.0,
    zeta_step_std=None,
    rob_acc=None,
    nat_acc=None,
    stability=None,
    search="Wu et al. 2021, Table 3",
    source="paper",
    created_at="2021-12-06",
)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ZetaRegistry:
    """Read, look up and upsert ζ entries in one Parquet file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def entries(self) -> list[ZetaEntry]:
        """Stored rows, plus the paper's row unless a stored row is the paper's."""
        stored = [ZetaEntry(**row) for row in self._rows()]
        identities = {e.identity() for e in stored}
        return ([] if PAPER_ENTRY.identity() in identities else [PAPER_ENTRY]) + stored

    def _rows(self) -> list[dict[str, Any]]:
        try:
            return read_rows(self.path, ZETA_SCHEMA)
        except WartuneError as err:
            raise WartuneError(f"ζ registry: {err}") from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(self.path.with_name(self.path.name + ".lock"), "w")  # noqa: SIM115 - closed below
        except OSError as err:
            raise WartuneError(f"ζ registry {str(self.path)!r}: cannot write there ({err.strerror or err})") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put(self, entry: ZetaEntry) -> None:
        """Add a calibration; it replaces only the entry of the same setting and search."""
        if not (math.isfinite(entry.zeta) and entry.zeta > 0):
            raise WartuneError(f"ζ of {entry.describe()} is {entry.zeta}: it must be a finite number > 0")
        with self._locked():
            rows = {ZetaEntry(**r).identity(): r for r in self._rows()}
            rows[entry.identity()] = asdict(entry)
            ordered = sorted(rows.values(), key=lambda r: (r["model"], r["dataset"], r["created_at"]))
            write_table(ordered, ZETA_SCHEMA, self.path)

    def lookup(self, ref: str, dataset: str, objective: str, eps: float, force: bool = False) -> ZetaEntry:
        """The entry `ref` names for a run on `dataset`, `objective`, ε: `MODEL` (its one entry
        for that setting), `MODEL@SEARCH` (that search's) or `MODEL@latest` (the newest).

        Several entries for `MODEL` alone are refused, naming each; a setting mismatch is
        refused unless `force` (then the newest entry closest to the run's is used); a model
        with no entry at all is an error that says how to calibrate it.
        """
        model, _, which = ref.partition("@")
        candidates = [e for e in self.entries() if e.model == model]
        if not candidates:
            known = ", ".join(sorted({e.model for e in self.entries()}))
            raise WartuneError(
                f"no ζ for {model!r} in {str(self.path)!r} (known: {known}); "
                f"calibrate it first: wartune calibrate --model {model} --space lambda_grid"
            )
        if which and which != "latest":
            candidates = [e for e in candidates if e.search == which]
            if not candidates:
                searches = ", ".join(sorted({e.search for e in self.entries() if e.model == model}))
                raise WartuneError(f"no ζ for {model!r} from search {which!r} (its searches: {searches})")
        matching = [e for e in candidates if e.dataset == dataset and e.objective == objective and math.isclose(e.eps, eps, rel_tol=1e-6)]
        if len(matching) > 1 and which != "latest":
            listed = "; ".join(f"{e.reference} (ζ {e.zeta:.4g}, best λ {e.best_lambda:g}, {e.created_at})" for e in matching)
            raise WartuneError(
                f"{len(matching)} ζ calibrations of {model!r} for {dataset}, {objective}, ε {eps:g}: {listed}; "
                f"name one (--zeta-from {matching[-1].reference}) or the newest ({model}@latest)"
            )
        if matching:
            return max(matching, key=lambda e: e.created_at)
        if force:
            return max(candidates, key=lambda e: (e.dataset == dataset, e.objective == objective, e.created_at))
        have = "; ".join(c.describe() for c in candidates)
        raise WartuneError(
            f"ζ for {model!r} was measured for {have}, not for {dataset}, {objective}, ε {eps:g}: "
            "ζ may not transfer across data sets, objectives or ε (use --force to use it anyway)"
        )


def doubt(entry: ZetaEntry, num_classes: int) -> str | None:
    """Why `entry`'s ζ cannot carry a decision, or None: a net at chance accuracy has a ratio
    of losses that says nothing about a trained one (0.2.0 stored such a ζ without a word)."""
    if not below_chance(entry.nat_acc, num_classes):
        return None
    return (
        f"ζ {entry.zeta:.4g} of {entry.reference} comes from a net at chance accuracy (natural "
        f"{100 * entry.nat_acc:.1f} %, chance {100 / num_classes:.1f} %): it says nothing about a trained net; "
        "calibrate with more epochs"
    )


def entry_from_trial(trial: dict[str, Any], search: str) -> ZetaEntry:
    """A calibration row from a trials.parquet row (the best trial of a thin-net search)."""
    if trial["lambda_setting"] is None:
        raise WartuneError(f"trial {trial['trial_id']} ran WAR: calibrate from a fixed-λ search")
    if trial["zeta"] is None or not math.isfinite(trial["zeta"]):
        raise WartuneError(f"trial {trial['trial_id']} has no finite ζ (l_rob was 0 in its last epoch)")
    return ZetaEntry(
        model=trial["model"],
        dataset=trial["dataset"],
        objective=trial["objective"],
        eps=trial["eps"],
        best_lambda=trial["lambda_setting"],
        zeta=trial["zeta"],
        zeta_step_std=trial["zeta_step_std"],
        rob_acc=trial["test_rob_acc"],  # reported; the choice read val_rob_acc
        nat_acc=trial["test_nat_acc"],
        stability=trial["test_stability"],
        val_rob_acc=trial.get("val_rob_acc"),
        calibration_epochs=trial.get("epochs"),
        search=search,
        source="calibrated",
        created_at=now(),
    )


def best_trial_entry(trials: list[dict[str, Any]], search: str, model: str | None = None) -> ZetaEntry:
    """Calibrate from a finished search: its best finished fixed-λ trial by validation robust
    accuracy (the entry keeps its test figures, as trials.parquet holds them). A search run with several seeds
    is judged per λ by the mean over its seeds, and the entry holds those means (ζ included)."""
    models = sorted({t["model"] for t in trials})
    if model is None and len(models) > 1:
        raise WartuneError(f"search {search!r} trained several models ({', '.join(models)}): name one with --model")
    fixed = [t for t in trials if t["lambda_setting"] is not None and (model is None or t["model"] == model)]
    best = best_trial(fixed)
    if best is None:
        raise WartuneError(f"search {search!r} has no finished fixed-λ trial" + (f" of {model!r}" if model else ""))
    grid = {"calibration_lambdas": ",".join(f"{lam:g}" for lam in sorted({t["lambda_setting"] for t in fixed})),
            "calibration_seeds": len({t.get("seed") for t in fixed})}  # fmt: skip
    if not repeated(fixed):
        return replace(entry_from_trial(best, search), **grid)
    done = [t for t in fixed if t["status"] == "finished" and t["val_rob_acc"] is not None]
    by_lambda = group(done, key=lambda t: t["lambda_setting"])
    repeats = max(by_lambda.values(), key=lambda rows: mean_of(rows, "val_rob_acc"))
    entries = [entry_from_trial(t, search) for t in repeats]  # each repeat must have a finite ζ
    columns = ("zeta", "zeta_step_std", "rob_acc", "nat_acc", "stability", "val_rob_acc")
    means = {c: MeanSd.of(getattr(e, c) for e in entries).mean for c in columns}
    return replace(entries[0], **means, **grid)
