"""`wartune compare`: the paper's Table 3 for any model family and data set.

For each target width it runs the ways of choosing λ (`strategies:`, default all) and
prices each in compute:
- untuned: the thin net's best λ, fixed (the paper's "no tuning" / N/A column);
- grid: every λ of the grid (manual tuning on the wide net);
- optuna: TPE over [min, max] of the grid with the grid's trial budget;
- pbt: Population Based Training over the same range, the grid's budget as its population;
- war: one WAR run with the thin net's ζ (Algorithm 1, or the space's `war:` block), and
  one more per `war_variants:` entry (`war-<name>`).
The thin-net calibration (a grid on `thin_model`) is run once; its cost is added to
untuned and WAR, as Table 3 does. With `seeds: N` every cell is repeated with N seeds
(the calibration too, judged by its mean): compare.parquet has a row per seed, compare.md
the mean ± sd with costs summed. Each part is its own resumable search under
`runs/<name>/` with its own summary and plots; `compare.parquet` and `compare.md` join them.
The dataset is loaded once, put into Ray's object store once, and shared by every part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wartune.engine.data import check_data_dir, load_dataset
from wartune.errors import ConfigError, WartuneError, warn
from wartune.results import manifest
from wartune.results.formatting import ci_text, interval_of, markdown_table, num, pct
from wartune.results.intervals import PairedDifference, mean_interval, paired_difference
from wartune.results.locks import check_unlocked
from wartune.results.plots import write_plots
from wartune.results.report import write_summary
from wartune.results.seeds import MeanSd, group, seeds_of
from wartune.results.store import (
    COMPARE_FILE,
    COMPARE_MD,
    COMPARE_SCHEMA,
    TRIAL_SCHEMA,
    TRIALS_FILE,
    ZETA_FILE,
    read_rows,
    write_table,
)
from wartune.results.trials import best_trial, decode_flags, is_finite
from wartune.results.zeta import ZetaEntry, ZetaRegistry, best_trial_entry
from wartune.tune.params import fixed_lambda, war_lambda
from wartune.tune.spaces import COMPARE_STRATEGIES, SearchSpace, folder_name
from wartune.tune.stacks import largest_chunk
from wartune.tune.strategies import (
    EXPERIMENT,
    SearchData,
    SearchOutcome,
    check_folder,
    check_stack_fits,
    claim_folder,
    lock_path,
    prepare_folder,
    ray_session,
    run_search,
    storage_root,
)

SinksFor = Callable[[SearchSpace], list[Any]]  # a part's extra sink factories (MLflow)
# robust %: with its 95 % interval; vs grid: the paired difference in points, with its 95 % interval
COLUMNS = ("model", "strategy", "λ", "λ settled", "natural %", "robust %", "vs grid", "AutoAttack %", "stability %", "seeds",
           "trials", "cost s", "cost / grid")  # fmt: skip
SEED_COLUMNS = ("model", "strategy", "seed", "λ", "λ settled", "natural %", "robust %", "vs grid", "AutoAttack %", "stability %",
                "trials", "cost s", "cost / grid")  # fmt: skip
CALIBRATED = ("untuned", "war")  # strategies that rely on the thin-net calibration (its cost counts in)


@dataclass
class CompareOutcome:
    """Where the compare's files are, and its rows (one per strategy, width and seed)."""

    folder: Path
    rows: list[dict[str, Any]]


def _part(space: SearchSpace, **changes: Any) -> SearchSpace:
    return SearchSpace.model_validate({**space.model_dump(by_alias=True), **changes})


def _run_part(part: SearchSpace, root: Path, resume: bool, sinks_for: SinksFor | None, storage: str | None,
              data: SearchData, title: str, **lam: Any) -> SearchOutcome:  # fmt: skip
    """Run one part; on --resume, continue it if it was started, else start it."""
    from ray import tune

    started = tune.Tuner.can_restore(f"{storage_root(root / part.name, storage)}/{EXPERIMENT}")
    sinks = sinks_for(part) if sinks_for is not None else None
    return run_search(part, root, resume=resume and started, overwrite=not (resume and started), extra_sinks=sinks,
                      storage=storage, data=data, title=title, **lam)  # fmt: skip


def part_count(space: SearchSpace) -> int:
    """How many searches a compare runs: the calibration, the wide part (untuned, grid and WAR
    side by side) when any of those is chosen, and one per model and seed for Optuna and PBT."""
    chosen = space.compare_strategies
    sampled = sum(s in chosen for s in ("optuna", "pbt")) * len(space.models) * len(space.seed_values)
    return 1 + any(s in chosen for s in ("untuned", "grid", "war")) + sampled


def part_title(space: SearchSpace, index: int, what: str) -> str:
    """`compare table3, part 2 of 3: untuned, grid and war on wrn10-2, wrn10-4`: a part's progress heading."""
    return f"compare {space.name}, part {index} of {part_count(space)}: {what}"


def is_war(strategy: str) -> bool:
    """WAR and its named variants (`war-<name>`)."""
    return strategy == "war" or strategy.startswith("war-")


def strategy_order(strategy: str) -> tuple[int, str]:
    """Table order: untuned, grid, optuna, WAR, then WAR's variants by name."""
    base = "war" if is_war(strategy) else strategy
    return (COMPARE_STRATEGIES.index(base) if base in COMPARE_STRATEGIES else len(COMPARE_STRATEGIES), strategy)


def untuned_in_grid(space: SearchSpace, entry: ZetaEntry) -> bool:
    """Whether the untuned λ is one of the grid's, so its row reuses the grid's trial at that λ
    (same model, λ and seed: the same run) instead of training it twice."""
    chosen = space.compare_strategies
    return "untuned" in chosen and "grid" in chosen and entry.best_lambda in space.lambdas


def wide_lambdas(space: SearchSpace, entry: ZetaEntry) -> list[dict[str, Any]]:
    """The λ specs of the wide-net part: the untuned λ, the grid, WAR and its variants, as chosen."""
    chosen = space.compare_strategies
    specs = []
    if "untuned" in chosen and not untuned_in_grid(space, entry):
        specs.append(fixed_lambda(entry.best_lambda, "untuned"))
    if "grid" in chosen:
        specs += [fixed_lambda(v, "grid") for v in space.lambdas]
    if "war" in chosen:
        specs.append(war_lambda(space.war, entry, "war"))
        specs += [war_lambda(settings, entry, f"war-{name}") for name, settings in space.war_variants.items()]
    return specs


def cells(trials: list[dict[str, Any]], space: SearchSpace, entry: ZetaEntry) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    """The trials of each (strategy, model, seed); the untuned cell borrows the grid's trial at its λ."""
    out: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    borrowed = untuned_in_grid(space, entry)
    for t in trials:
        out.setdefault((t["strategy"], t["model"], t["seed"]), []).append(t)
        if borrowed and t["strategy"] == "grid" and t["lambda_setting"] == entry.best_lambda:
            out.setdefault(("untuned", t["model"], t["seed"]), []).append({**t, "strategy": "untuned"})
    return out


def _cost(trials: list[dict[str, Any]]) -> float:
    return float(sum(t["device_seconds"] or 0.0 for t in trials))


def _best(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The best finished trial; the first one when none finished (its row shows the failure)."""
    return best_trial(trials) or trials[0]


def compare_rows(
    name: str, calibration: list[dict[str, Any]], by_cell: dict[tuple[str, str, int], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One row per (strategy, model, seed), costs in device-seconds, that seed's calibration counted in."""
    calib_cost = {seed: _cost(ts) for seed, ts in group(calibration, key=lambda t: t["seed"]).items()}
    rows = []
    for (strategy, model, seed), trials in by_cell.items():
        best = _best(trials)
        own = _cost(trials)
        calib = calib_cost.get(seed, 0.0) if strategy in CALIBRATED or is_war(strategy) else 0.0
        rows.append(
            {
                "compare": name, "strategy": strategy, "model": model, "width": best["width"], "seed": seed,
                "lambda_final": best["lambda_final"], "lambda_settled_epoch": best["lambda_settled_epoch"],
                "val_rob_acc": best.get("val_rob_acc"), "test_nat_acc": best.get("test_nat_acc"),
                "test_rob_acc": best.get("test_rob_acc"), **dict(zip(("test_rob_acc_lo", "test_rob_acc_hi"), interval_of(best, "test_rob_acc"), strict=True)),
                "rob_vs_grid": None, "rob_vs_grid_lo": None, "rob_vs_grid_hi": None, "aa_rob_acc": best.get("aa_rob_acc"),
                "test_stability": best.get("test_stability"), "trials": len(trials), "device_seconds": own,
                "calibration_seconds": calib, "total_seconds": own + calib, "cost_vs_grid": None,
                "aa_seconds": float(sum(t.get("aa_seconds") or 0.0 for t in trials)), "best_trial": best["trial_id"],
            }  # fmt: skip
        )
    grid_cost = {(r["model"], r["seed"]): r["total_seconds"] for r in rows if r["strategy"] == "grid"}
    grid_best = {(model, seed): _best(trials) for (strategy, model, seed), trials in by_cell.items() if strategy == "grid"}
    for r in rows:
        if grid_cost.get((r["model"], r["seed"])):
            r["cost_vs_grid"] = r["total_seconds"] / grid_cost[(r["model"], r["seed"])]
        grid = grid_best.get((r["model"], r["seed"]))
        if r["strategy"] != "grid" and grid is not None:
            best = _best(by_cell[(r["strategy"], r["model"], r["seed"])])
            if (difference := robust_difference(best, grid)) is not None:
                r.update(rob_vs_grid=difference.diff, rob_vs_grid_lo=difference.lo, rob_vs_grid_hi=difference.hi)
    return sorted(rows, key=lambda r: (r["width"], strategy_order(r["strategy"]), r["seed"]))


def robust_difference(a: dict[str, Any], b: dict[str, Any]) -> PairedDifference | None:
    """a's test robust accuracy minus b's, paired over the same test images (each trial's
    per-example flags), with Newcombe's 95 % interval; None where either lacks its flags."""
    n = a.get("test_examples")
    if not (a.get("test_robust") and b.get("test_robust")) or n != b.get("test_examples"):
        return None
    return paired_difference(decode_flags(a["test_robust"], n), decode_flags(b["test_robust"], n))


def strategies_of(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["strategy"] for r in rows}, key=strategy_order)


def totals(rows: list[dict[str, Any]], calibration_seconds: float) -> dict[str, float]:
    """Each strategy's cost over all widths and seeds, the shared calibration counted once."""
    out = {}
    for s in strategies_of(rows):
        own = sum(r["device_seconds"] for r in rows if r["strategy"] == s)
        out[s] = own + (calibration_seconds if s in CALIBRATED or is_war(s) else 0.0)
    return out


def _settled(values: list[Any]) -> str:
    stats = MeanSd.of(values)
    if stats.n == 1 and stats.mean is not None:
        return f"epoch {stats.mean:.0f}"
    return stats.text(fmt="{:.1f}") if stats.n else "–"


def compare_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """One text row per (model, strategy) under `COLUMNS`: mean ± sd over seeds, costs summed
    (the grid's too, for cost / grid); one rule for compare.md and the terminal."""
    table = []
    cell = group(rows, key=lambda r: (r["model"], r["strategy"]))
    for (model, strategy), repeats in cell.items():
        total = sum(r["total_seconds"] or 0.0 for r in repeats)
        grid = sum(r["total_seconds"] or 0.0 for r in cell.get((model, "grid"), []))
        ratio = total / grid if grid and all(r["cost_vs_grid"] is not None for r in repeats) else None
        table.append(
            [
                model, strategy, MeanSd.of(r["lambda_final"] for r in repeats).text(),
                _settled([r["lambda_settled_epoch"] for r in repeats]),
                MeanSd.of(r.get("test_nat_acc") for r in repeats).text(100),
                *(_over_seeds(repeats, column, signed) for column, signed in (("test_rob_acc", False), ("rob_vs_grid", True))),
                *(MeanSd.of(r.get(m) for r in repeats).text(100) for m in ("aa_rob_acc", "test_stability")),
                str(len(repeats)), str(sum(r["trials"] for r in repeats)), num(total, "{:.0f}"), num(ratio),
            ]
        )  # fmt: skip
    return table


def _over_seeds(repeats: list[dict[str, Any]], column: str, signed: bool) -> str:
    """One seed: its figure with its own interval (Wilson; paired for a difference); several:
    their mean with a Student-t 95 % interval over the seeds."""
    if len(repeats) == 1:
        r = repeats[0]
        return ci_text(r.get(column), r.get(f"{column}_lo"), r.get(f"{column}_hi"), signed)
    stats = mean_interval(r.get(column) for r in repeats)
    if stats is None:
        return "–"
    mean, lo, hi = stats
    floor = -1.0 if signed else 0.0  # a proportion's interval stays in [0, 1], a difference's in [-1, 1]
    return ci_text(mean, max(lo, floor), min(hi, 1.0), signed)


def noise_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Each strategy against the grid, per model, in words: ahead, behind or within noise, by the
    paired 95 % interval of the test robust accuracy (the mean over seeds' t-interval with several)."""
    lines = []
    for (model, strategy), repeats in group(rows, key=lambda r: (r["model"], r["strategy"])).items():
        if strategy == "grid":
            continue
        stats = mean_interval(r.get("rob_vs_grid") for r in repeats) if len(repeats) > 1 else (
            repeats[0].get("rob_vs_grid"), repeats[0].get("rob_vs_grid_lo"), repeats[0].get("rob_vs_grid_hi"))  # fmt: skip
        if stats is None or not all(is_finite(v) for v in stats):
            continue
        diff, lo, hi = stats[0], max(stats[1], -1.0), min(stats[2], 1.0)
        verdict = "within noise" if lo <= 0 <= hi else ("ahead of the grid" if lo > 0 else "behind the grid")
        lines.append(f"- {strategy} on {model}: {ci_text(diff, lo, hi, signed=True)} points of test robust accuracy "
                     f"against the grid's best λ: {verdict}.")  # fmt: skip
    return lines


def seed_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Every (model, strategy, seed) row under `SEED_COLUMNS`."""
    return [
        [
            r["model"], r["strategy"], str(r["seed"]), num(r["lambda_final"]), num(r["lambda_settled_epoch"], "epoch {}"),
            pct(r["test_nat_acc"]), ci_text(r["test_rob_acc"], r["test_rob_acc_lo"], r["test_rob_acc_hi"]),
            ci_text(r["rob_vs_grid"], r["rob_vs_grid_lo"], r["rob_vs_grid_hi"], signed=True),
            pct(r.get("aa_rob_acc")), pct(r["test_stability"]), str(r["trials"]),
            num(r["total_seconds"], "{:.0f}"), num(r["cost_vs_grid"]),
        ]
        for r in rows
    ]  # fmt: skip


def compare_markdown(name: str, rows: list[dict[str, Any]], calibration: dict[str, Any], total: dict[str, float]) -> str:
    grid = total.get("grid") or float("nan")
    seeds = seeds_of(rows)
    over = f"mean ± sd over seeds {', '.join(map(str, seeds))}; " if len(seeds) > 1 else ""
    lines = [
        f"# Compare `{name}` (the paper's Table 3 layout)",
        "",
        f"Calibration on {calibration['model']}: best λ {calibration['best_lambda']:g}, ζ {calibration['zeta']:.3f}, "
        f"{calibration['seconds']:.0f} device-seconds (counted in untuned and WAR, per width).",
        "",
        "Metrics of each strategy's best trial (chosen by validation robust accuracy): its best epoch's "
        "weights (chosen on the validation split too) read once on the whole test split, with 95 % "
        "intervals (Wilson; over several seeds, the mean's Student-t interval). vs grid: the test robust "
        "accuracy minus the grid's best trial's on the same test images, with its paired 95 % interval "
        "(Newcombe); λ settled: the epoch "
        "from which WAR's λ_t stays within 10 % of its final value; cost in device-seconds "
        f"(GPU share × wall on a GPU, CPUs × wall on CPU), {over}costs summed over seeds.",
        "",
    ]
    if aa_cost := sum(r.get("aa_seconds") or 0.0 for r in rows):
        lines += [
            "AutoAttack %: the best trial's robust accuracy under standard AutoAttack, run at each part's end "
            f"(`final_attack`; – not attacked); it cost {aa_cost:.0f} device-seconds, not in the costs below, "
            "which price the tuning.",
            "",
        ]
    if calibration.get("untuned_in_grid"):
        lines += ["The untuned λ is one of the grid's: its row is the grid's run at that λ (counted in both).", ""]
    lines += [markdown_table(COLUMNS, compare_table(rows)), ""]
    if noise := noise_lines(rows):
        lines += [*noise, ""]
    if len(seeds) > 1:
        lines += ["## Every seed", "", markdown_table(SEED_COLUMNS, seed_table(rows)), ""]
    lines += [
        "## Total over all widths (calibration counted once)",
        "",
        markdown_table(["strategy", "cost s", "cost / grid"], [[s, num(c, "{:.0f}"), num(c / grid)] for s, c in total.items()]),
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
        manifest.check_not_newer(root)
    else:
        check_folder(root, resume=False, overwrite=overwrite, kind="compare")
    if space.stack > 1:  # the calibration's grid, then the wide part's untuned λ, grid and WAR runs
        assert space.thin_model is not None
        wide = (len(space.lambdas) + 2 + len(space.war_variants)) * space.seeds
        check_stack_fits(space, largest_chunk(len(space.lambdas) * space.seeds, space.stack), [space.thin_model])
        check_stack_fits(space, largest_chunk(wide, space.stack))
    return root


def write_reports(root: Path, name: str, parts: list[SearchOutcome]) -> None:
    """Plots of the whole compare, then each part's summary.md and plots."""
    write_plots(root)
    for part in parts:
        write_summary(part.folder, f"{name}/{part.space.name}", part.trials)
        write_plots(part.folder)


CALIBRATE_PART, WIDE_PART = "calibrate", "grid-untuned-war"


def write_compare_markdown(root: Path, name: str, rows: list[dict[str, Any]], calibration: dict[str, Any]) -> Path:
    path = root / COMPARE_MD
    path.write_text(compare_markdown(name, rows, calibration, totals(rows, calibration["seconds"])))
    return path


def rebuild_compare_reports(root: Path) -> list[Path]:
    """compare.md, the compare's plots and each part's summary.md and plots, from the Parquet
    files alone (`wartune report` on a compare folder): what `run_compare` wrote at its end."""
    rows = read_rows(root / COMPARE_FILE, COMPARE_SCHEMA)
    if not rows:
        raise WartuneError(f"{str(root / COMPARE_FILE)!r} holds no rows: the compare did not finish")
    name = rows[0]["compare"]
    calib = read_rows(root / CALIBRATE_PART / TRIALS_FILE, TRIAL_SCHEMA)
    if not calib:
        raise WartuneError(f"{str(root)!r} has no {CALIBRATE_PART}/{TRIALS_FILE}: not a finished compare folder")
    entry = best_trial_entry(calib, f"{name}/{CALIBRATE_PART}")
    wide = {t["trial_id"]: t for t in read_rows(root / WIDE_PART / TRIALS_FILE, TRIAL_SCHEMA)}
    borrowed = any(r["strategy"] == "untuned" and wide.get(r["best_trial"], {}).get("strategy") == "grid" for r in rows)
    calibration = {"model": entry.model, "best_lambda": entry.best_lambda, "zeta": entry.zeta,
                   "seconds": _cost(calib), "untuned_in_grid": borrowed}  # fmt: skip
    written = [write_compare_markdown(root, name, rows, calibration), *write_plots(root)]
    for part in sorted(p for p in root.iterdir() if (p / TRIALS_FILE).is_file()):
        written.append(write_summary(part, f"{name}/{part.name}", read_rows(part / TRIALS_FILE, TRIAL_SCHEMA)))
        written += write_plots(part)
    return written


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
            manifest.record(root)
        elif (line := manifest.upgrade(root)) is not None:  # compare.parquet; each part upgrades its own
            warn(line)
        assert space.thin_model is not None
        grid = space.lambdas
        chosen = space.compare_strategies
        with ray_session(address, num_cpus, num_gpus):
            import ray
            from ray import tune

            data_ref = ray.put(data)  # one copy in the object store for every part's trials
            calib = _run_part(_part(space, name=CALIBRATE_PART, strategy="grid", model=space.thin_model, strategies=None, war_variants={},
                                    final_attack="none"),  # it only picks λ and ζ, by PGD-20
                              root, resume, sinks_for, storage, data_ref,
                              part_title(space, 1, f"calibrate λ and ζ on {space.thin_model}"))  # fmt: skip
            entry = best_trial_entry(calib.trials, f"{space.name}/calibrate", space.thin_model)
            ZetaRegistry(registry or out / ZETA_FILE).put(entry)
            parts = []
            if specs := wide_lambdas(space, entry):
                wide = _part(space, name=WIDE_PART, strategy="grid", strategies=None, war_variants={})
                wide_strategies = [c for c in chosen if c in ("untuned", "grid", "war")] + [f"war-{n}" for n in space.war_variants]
                what = f"{', '.join(wide_strategies)} on {', '.join(space.models)}"
                parts.append(_run_part(wide, root, resume, sinks_for, storage, data_ref, part_title(space, 2, what),
                                       lam=tune.grid_search(specs)))  # fmt: skip
            for sampled in (s for s in ("optuna", "pbt") if s in chosen):
                parts += [
                    _run_part(
                        _part(space, name=sampled_name(sampled, model, seed, space.seeds), strategy=sampled, model=model,
                              trials=len(grid), seed=seed, seeds=1, strategies=None, war_variants={},
                              stack=space.stack if sampled == "optuna" else 1,  # PBT moves trials one by one
                              **{"lambda": {"low": min(grid), "high": max(grid), "log": min(grid) > 0}}),
                        root, resume, sinks_for, storage, data_ref,
                        part_title(space, len(parts) + 2 + k, f"{sampled} on {model}" + (f", seed {seed}" if space.seeds > 1 else "")),
                    )  # fmt: skip
                    for k, (model, seed) in enumerate((m, s) for m in space.models for s in space.seed_values)
                ]
        rows = compare_rows(space.name, calib.trials, cells([t for p in parts for t in p.trials], space, entry))
        write_table(rows, COMPARE_SCHEMA, root / COMPARE_FILE)
        calibration = {"model": space.thin_model, "best_lambda": entry.best_lambda, "zeta": entry.zeta,
                       "seconds": _cost(calib.trials), "untuned_in_grid": untuned_in_grid(space, entry)}  # fmt: skip
        write_compare_markdown(root, space.name, rows, calibration)
        write_reports(root, space.name, [calib, *parts])
        return CompareOutcome(root, rows)


def sampled_name(strategy: str, model: str, seed: int, seeds: int) -> str:
    """An Optuna or PBT part's name: one study (population) per model, and per seed when there are several."""
    return folder_name(f"{strategy}-{model}" if seeds == 1 else f"{strategy}-{model}-seed{seed}")
