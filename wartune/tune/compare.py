"""`wartune compare`: the paper's Table 3 for any model family and data set.

For each target width it runs the four ways of choosing λ and prices each in compute:
- untuned: the thin net's best λ, fixed (the paper's "no tuning" / N/A column);
- grid: every λ of the grid (manual tuning on the wide net);
- optuna: TPE over [min, max] of the grid with the grid's trial budget;
- war: one WAR run with the thin net's ζ (Algorithm 1).
The thin-net calibration (a grid on `thin_model`) is run once; its cost is added to
untuned and WAR, as Table 3 does. Each part is its own resumable search under
`runs/<name>/` with its own summary and plots; `compare.parquet` and `compare.md` join them.
The dataset is loaded once, put into Ray's object store once, and shared by every part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wartune.engine.data import check_data_dir, load_dataset
from wartune.errors import ConfigError, WartuneError
from wartune.results.formatting import markdown_table, num, pct
from wartune.results.locks import check_unlocked
from wartune.results.plots import write_plots
from wartune.results.report import write_summary
from wartune.results.store import COMPARE_FILE, COMPARE_MD, COMPARE_SCHEMA, ZETA_FILE, write_table
from wartune.results.trials import best_trial
from wartune.results.zeta import ZetaRegistry, best_trial_entry
from wartune.tune.params import fixed_lambda, war_lambda
from wartune.tune.spaces import SearchSpace
from wartune.tune.strategies import (
    EXPERIMENT,
    SearchData,
    SearchOutcome,
    check_folder,
    claim_folder,
    lock_path,
    prepare_folder,
    ray_session,
    run_search,
    storage_root,
)

STRATEGIES = ("untuned", "grid", "optuna", "war")
SinksFor = Callable[[SearchSpace], list[Any]]  # a part's extra sink factories (MLflow)
COLUMNS = ("model", "strategy", "λ", "λ settled", "natural %", "robust %", "stability %", "trials", "cost s", "cost / grid")


@dataclass
class CompareOutcome:
    """Where the compare's files are, and its rows (one per strategy and width)."""

    folder: Path
    rows: list[dict[str, Any]]


def _part(space: SearchSpace, **changes: Any) -> SearchSpace:
    return SearchSpace.model_validate({**space.model_dump(by_alias=True), **changes})


def _run_part(part: SearchSpace, root: Path, resume: bool, sinks_for: SinksFor | None, storage: str | None,
              data: SearchData, **lam: Any) -> SearchOutcome:  # fmt: skip
    """Run one part; on --resume, continue it if it was started, else start it."""
    from ray import tune

    started = tune.Tuner.can_restore(f"{storage_root(root / part.name, storage)}/{EXPERIMENT}")
    sinks = sinks_for(part) if sinks_for is not None else None
    return run_search(part, root, resume=resume and started, overwrite=not (resume and started), extra_sinks=sinks,
                      storage=storage, data=data, **lam)  # fmt: skip


def _cost(trials: list[dict[str, Any]]) -> float:
    return float(sum(t["device_seconds"] or 0.0 for t in trials))


def _best(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The best finished trial; the first one when none finished (its row shows the failure)."""
    return best_trial(trials) or trials[0]


def compare_rows(
    name: str, calibration: list[dict[str, Any]], by_strategy: dict[tuple[str, str], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One row per (strategy, model), costs in device-seconds, calibration counted in."""
    calib_cost = _cost(calibration)
    rows = []
    for (strategy, model), trials in by_strategy.items():
        best = _best(trials)
        own = _cost(trials)
        calib = calib_cost if strategy in ("untuned", "war") else 0.0
        rows.append(
            {
                "compare": name, "strategy": strategy, "model": model, "width": best["width"],
                "lambda_final": best["lambda_final"], "lambda_settled_epoch": best["lambda_settled_epoch"],
                "nat_acc": best["nat_acc"], "rob_acc": best["rob_acc"],
                "stability": best["stability"], "trials": len(trials), "device_seconds": own,
                "calibration_seconds": calib, "total_seconds": own + calib, "cost_vs_grid": None,
                "best_trial": best["trial_id"],
            }  # fmt: skip
        )
    grid_cost = {r["model"]: r["total_seconds"] for r in rows if r["strategy"] == "grid"}
    for r in rows:
        if grid_cost.get(r["model"]):
            r["cost_vs_grid"] = r["total_seconds"] / grid_cost[r["model"]]
    order = {s: i for i, s in enumerate(STRATEGIES)}
    return sorted(rows, key=lambda r: (r["width"], order[r["strategy"]]))


def totals(rows: list[dict[str, Any]], calibration_seconds: float) -> dict[str, float]:
    """Each strategy's cost over all widths, the shared calibration counted once."""
    out = {}
    for s in STRATEGIES:
        own = sum(r["device_seconds"] for r in rows if r["strategy"] == s)
        out[s] = own + (calibration_seconds if s in ("untuned", "war") else 0.0)
    return out


def compare_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The rows as text under `COLUMNS`: one rule for compare.md and the terminal."""
    return [
        [
            r["model"], r["strategy"], num(r["lambda_final"]), num(r["lambda_settled_epoch"], "epoch {}"),
            pct(r["nat_acc"]), pct(r["rob_acc"]),
            pct(r["stability"]), str(r["trials"]), num(r["total_seconds"], "{:.0f}"), num(r["cost_vs_grid"]),
        ]
        for r in rows
    ]  # fmt: skip


def compare_markdown(name: str, rows: list[dict[str, Any]], calibration: dict[str, Any], total: dict[str, float]) -> str:
    grid = total["grid"] or float("nan")
    lines = [
        f"# Compare `{name}` (the paper's Table 3 layout)",
        "",
        f"Calibration on {calibration['model']}: best λ {calibration['best_lambda']:g}, ζ {calibration['zeta']:.3f}, "
        f"{calibration['seconds']:.0f} device-seconds (counted in untuned and WAR, per width).",
        "",
        "Metrics of each strategy's best trial (by robust accuracy): its best epoch's weights "
        "(by the per-epoch evaluation) attacked once more on the whole test split; λ settled: the epoch "
        "from which WAR's λ_t stays within 10 % of its final value; cost in device-seconds "
        "(GPU share × wall on a GPU, CPUs × wall on CPU).",
        "",
        markdown_table(COLUMNS, compare_table(rows)),
        "",
        "## Total over all widths (calibration counted once)",
        "",
        markdown_table(
            ["strategy", "cost s", "cost / grid"],
            [[s, num(total[s], "{:.0f}"), num(total[s] / grid)] for s in STRATEGIES],
        ),
        "",
    ]
    return "\n".join(lines)


def check_compare(space: SearchSpace, out: Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Fail before anything runs or is deleted: a compare space, its data, a usable folder.

    A compare's folder holds one search per part, so --resume asks only that an earlier
    compare started there; each part then continues or starts on its own (`_run_part`).
    """
    if space.strategy != "compare":
        raise ConfigError(f"space {space.name!r} has strategy {space.strategy!r}: compare needs strategy 'compare' (e.g. table3)")
    check_data_dir(space.dataset, space.data_dir)
    root = out / space.name
    if resume and not root.is_dir():
        raise WartuneError(f"nothing to resume in {str(root)!r}: no earlier compare was started there")
    if resume:
        check_unlocked(lock_path(root), f"compare {space.name!r} in {str(out)!r}")
    else:
        check_folder(root, resume=False, overwrite=overwrite, kind="compare")
    return root


def write_reports(root: Path, name: str, parts: list[SearchOutcome]) -> None:
    """Plots of the whole compare, then each part's summary.md and plots."""
    write_plots(root)
    for part in parts:
        write_summary(part.folder, f"{name}/{part.space.name}", part.trials)
        write_plots(part.folder)


def run_compare(space: SearchSpace, out: Path, *, resume: bool = False, overwrite: bool = False,
                registry: Path | None = None, address: str | None = None, num_cpus: int | None = None,
                num_gpus: float | None = None, storage: str | None = None,
                sinks_for: SinksFor | None = None) -> CompareOutcome:  # fmt: skip
    """Calibrate on the thin net, then run all four strategies on every target width.

    `overwrite` clears an earlier compare of the same name first; `resume` continues one.
    """
    root = check_compare(space, out, resume, overwrite)
    data = load_dataset(space.dataset, space.data_dir)  # once, before the folder is touched
    with claim_folder(root, "compare"):
        if not resume:
            prepare_folder(root, resume=False, overwrite=overwrite)
        assert space.thin_model is not None
        grid = space.lambdas
        with ray_session(address, num_cpus, num_gpus):
            import ray

            data_ref = ray.put(data)  # one copy in the object store for every part's trials
            calib = _run_part(_part(space, name="calibrate", strategy="grid", model=space.thin_model), root, resume, sinks_for, storage, data_ref)
            entry = best_trial_entry(calib.trials, f"{space.name}/calibrate", space.thin_model)
            ZetaRegistry(registry or out / ZETA_FILE).put(entry)
            war = war_lambda(space.war, entry, "war")
            untuned = fixed_lambda(entry.best_lambda, "untuned")
            fixed_values = [fixed_lambda(v, "grid") for v in grid]
            from ray import tune

            lam = tune.grid_search([untuned, *fixed_values, war])
            wide = _run_part(_part(space, name="grid-untuned-war", strategy="grid"), root, resume, sinks_for, storage, data_ref, lam=lam)
            optuna_parts = [
                _run_part(
                    _part(space, name=f"optuna-{model}", strategy="optuna", model=model, trials=len(grid),
                          **{"lambda": {"low": min(grid), "high": max(grid), "log": min(grid) > 0}}),
                    root, resume, sinks_for, storage, data_ref,
                )  # fmt: skip
                for model in space.models
            ]
        by_strategy: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for t in wide.trials + [t for p in optuna_parts for t in p.trials]:
            by_strategy.setdefault((t["strategy"], t["model"]), []).append(t)
        rows = compare_rows(space.name, calib.trials, by_strategy)
        write_table(rows, COMPARE_SCHEMA, root / COMPARE_FILE)
        calibration = {"model": space.thin_model, "best_lambda": entry.best_lambda, "zeta": entry.zeta,
                       "seconds": _cost(calib.trials)}  # fmt: skip
        (root / COMPARE_MD).write_text(compare_markdown(space.name, rows, calibration, totals(rows, calibration["seconds"])))
        write_reports(root, space.name, [calib, wide, *optuna_parts])
        return CompareOutcome(root, rows)
