"""Commands that run searches: search, calibrate, transfer, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from wartune.cli.app import app
from wartune.cli.options import (
    AddressOpt,
    ConcurrentOpt,
    CpusOpt,
    DataDirOpt,
    DatasetOpt,
    EpochsOpt,
    ForceOpt,
    GpusOpt,
    ModelOpt,
    NameOpt,
    NoMlflowOpt,
    NumCpusOpt,
    NumGpusOpt,
    ObjectiveOpt,
    OutOpt,
    OverwriteOpt,
    RegistryOpt,
    ResumeOpt,
    SeedOpt,
    SpaceOpt,
    StorageOpt,
    TrackingOpt,
    err_console,
    mlflow_sinks,
    out_console,
    ray_options,
    registry_at,
    space_overrides,
)
from wartune.errors import ConfigError, WartuneError


def run_and_report(
    spec: Any, out: Path, run: dict[str, Any], *, zeta: float | None = None, lam: Any = None,
    tracking_uri: str | None = None, no_mlflow: bool = False,
) -> Any:  # fmt: skip
    """Validate the folder, run the search, print its table, write summary.md and plots."""
    from wartune.engine.data import check_data_dir
    from wartune.results.plots import write_plots
    from wartune.results.report import rich_table, rich_width_tables, write_summary
    from wartune.tune.strategies import check_folder, run_search

    check_data_dir(spec.dataset, spec.data_dir)
    check_folder(out / spec.name, run["resume"], run["overwrite"], run.get("storage"))
    err_console.print(
        f"search [bold]{spec.name}[/bold]: strategy {spec.strategy}, {spec.objective} on {spec.dataset}, "
        f"results in {out / spec.name}"
    )
    sinks = mlflow_sinks(spec, out, tracking_uri, no_mlflow)
    outcome = run_search(spec, out, zeta=zeta, lam=lam, extra_sinks=sinks, **run)
    out_console.print(rich_table(outcome.trials, f"{spec.name}: metrics at each trial's best epoch (%)"))
    for table in rich_width_tables(outcome.trials):
        out_console.print(table)
    summary = write_summary(outcome.folder, spec.name, outcome.trials)
    plots = write_plots(outcome.folder)
    if sinks:
        from wartune.results.tracking import log_artifacts

        log_artifacts(sinks[0].tracking_uri, sinks[0].experiment, [summary, *plots])
    out_console.print(f"results: {outcome.folder}/trials.parquet, epochs.parquet; summary: {summary}; plots: {outcome.folder / 'plots'}")
    return outcome


@app.command()
def search(
    space: SpaceOpt = "lambda_grid",
    model: ModelOpt = None,
    epochs: EpochsOpt = None,
    objective: ObjectiveOpt = None,
    lambdas: Annotated[str | None, typer.Option(help="Comma-separated λ grid, e.g. 6,9,12.")] = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    out: OutOpt = Path("runs"),
    name: NameOpt = None,
    seed: SeedOpt = None,
    gpus_per_trial: GpusOpt = None,
    cpus_per_trial: CpusOpt = None,
    max_concurrent: ConcurrentOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    num_gpus: NumGpusOpt = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    no_mlflow: NoMlflowOpt = False,
    registry: RegistryOpt = None,
    force: ForceOpt = False,
) -> None:
    """Run a hyperparameter search over λ (and widths) and print its table."""
    from wartune.tune.spaces import load_space

    overrides = space_overrides(
        name=name, model=model, epochs=epochs, objective=objective, lambdas=lambdas, seed=seed,
        max_concurrent=max_concurrent, dataset=dataset, data_dir=data_dir,
        gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial,
    )  # fmt: skip
    spec = load_space(space, overrides)
    zeta = None
    if spec.strategy == "war" and not resume:
        assert spec.zeta_from is not None
        entry = registry_at(registry, out).lookup(spec.zeta_from, spec.dataset, spec.objective, spec.eps, force)
        zeta = entry.zeta
    run = ray_options(resume, overwrite, address, num_cpus, num_gpus, storage)
    run_and_report(spec, out, run, zeta=zeta, tracking_uri=tracking_uri, no_mlflow=no_mlflow)


@app.command()
def calibrate(
    model: Annotated[str | None, typer.Option(help="The thin model to calibrate, e.g. wrn34-0.5.")] = None,
    space: SpaceOpt = "lambda_grid",
    from_search: Annotated[Path | None, typer.Option("--from", help="Read a finished search folder instead of running one.")] = None,
    epochs: EpochsOpt = None,
    objective: ObjectiveOpt = None,
    lambdas: Annotated[str | None, typer.Option(help="Comma-separated λ grid, e.g. 6,9,12.")] = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    out: OutOpt = Path("runs"),
    name: NameOpt = None,
    seed: SeedOpt = None,
    gpus_per_trial: GpusOpt = None,
    cpus_per_trial: CpusOpt = None,
    max_concurrent: ConcurrentOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    num_gpus: NumGpusOpt = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    no_mlflow: NoMlflowOpt = False,
    registry: RegistryOpt = None,
) -> None:
    """Tune λ on a thin model, pick the best by robust accuracy, and store its ζ."""
    from wartune.results.store import TRIAL_SCHEMA, TRIALS_FILE, read_rows
    from wartune.results.zeta import best_trial_entry
    from wartune.tune.spaces import load_space

    reg = registry_at(registry, out)
    if from_search is not None:
        if not (from_search / TRIALS_FILE).is_file():
            raise WartuneError(f"--from {str(from_search)!r}: no {TRIALS_FILE} there (not a wartune search folder)")
        trials, search_name = read_rows(from_search / TRIALS_FILE, TRIAL_SCHEMA), from_search.name
    else:
        if model is None:
            raise ConfigError("calibrate needs --model (the thin network, e.g. wrn34-0.5) or --from a finished search")
        overrides = space_overrides(
            name=name or f"calibrate-{model}", strategy="grid", model=[model], epochs=epochs, objective=objective,
            lambdas=lambdas, seed=seed, max_concurrent=max_concurrent, dataset=dataset, data_dir=data_dir,
            gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial,
        )  # fmt: skip
        spec = load_space(space, overrides)
        run = ray_options(resume, overwrite, address, num_cpus, num_gpus, storage)
        outcome = run_and_report(spec, out, run, tracking_uri=tracking_uri, no_mlflow=no_mlflow)
        trials, search_name = outcome.trials, spec.name
    entry = best_trial_entry(trials, search_name, model)
    reg.put(entry)
    out_console.print(
        f"ζ registry {reg.path}: {entry.describe()} → best λ {entry.best_lambda:g}, ζ {entry.zeta:.3f} "
        f"(per-step spread {entry.zeta_step_std or 0:.3f}), robust {100 * (entry.rob_acc or 0):.2f} %",
        highlight=False,
    )


@app.command()
def transfer(
    zeta_from: Annotated[str, typer.Option("--zeta-from", help="ζ registry key: the thin model, e.g. wrn34-0.5.")],
    model: ModelOpt = None,
    compare_untuned: Annotated[bool, typer.Option(help="Also train with the thin net's best λ fixed (the paper's N/A row).")] = False,
    force: ForceOpt = False,
    space: SpaceOpt = "war",
    epochs: EpochsOpt = None,
    objective: ObjectiveOpt = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    alpha: Annotated[float | None, typer.Option(help="WAR's step size α (paper: 0.1, needs no tuning).")] = None,
    out: OutOpt = Path("runs"),
    name: NameOpt = None,
    seed: SeedOpt = None,
    gpus_per_trial: GpusOpt = None,
    cpus_per_trial: CpusOpt = None,
    max_concurrent: ConcurrentOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    num_gpus: NumGpusOpt = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    no_mlflow: NoMlflowOpt = False,
    registry: RegistryOpt = None,
) -> None:
    """Train wider models once each with WAR, using the ζ calibrated on a thin one."""
    from wartune.tune.spaces import load_space
    from wartune.tune.strategies import war_and_untuned

    overrides = space_overrides(
        name=name or f"transfer-{zeta_from}", strategy="war", zeta_from=zeta_from, model=model, epochs=epochs,
        objective=objective, seed=seed, max_concurrent=max_concurrent, dataset=dataset, data_dir=data_dir,
        gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial,
    )  # fmt: skip
    if alpha is not None:
        overrides["alpha"] = alpha
    spec = load_space(space, overrides)
    entry = registry_at(registry, out).lookup(zeta_from, spec.dataset, spec.objective, spec.eps, force)
    err_console.print(f"ζ {entry.zeta:.3f} from {entry.describe()} (best λ {entry.best_lambda:g}, {entry.source})")
    lam = war_and_untuned(entry.zeta, spec.alpha, entry.best_lambda) if compare_untuned else None
    run = ray_options(resume, overwrite, address, num_cpus, num_gpus, storage)
    run_and_report(spec, out, run, zeta=entry.zeta, lam=lam, tracking_uri=tracking_uri, no_mlflow=no_mlflow)


@app.command()
def compare(
    space: SpaceOpt = "table3",
    model: ModelOpt = None,
    epochs: EpochsOpt = None,
    lambdas: Annotated[str | None, typer.Option(help="Comma-separated λ grid, e.g. 6,9,12.")] = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    out: OutOpt = Path("runs"),
    name: NameOpt = None,
    seed: SeedOpt = None,
    gpus_per_trial: GpusOpt = None,
    cpus_per_trial: CpusOpt = None,
    max_concurrent: ConcurrentOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    num_gpus: NumGpusOpt = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    no_mlflow: NoMlflowOpt = False,
    registry: RegistryOpt = None,
) -> None:
    """Table 3: untuned λ, grid, Optuna and WAR on every target width, with compute cost."""
    import shutil

    from rich.table import Table

    from wartune.engine.data import check_data_dir
    from wartune.tune.compare import run_compare
    from wartune.tune.spaces import load_space
    from wartune.tune.strategies import check_folder

    overrides = space_overrides(
        name=name, model=model, epochs=epochs, lambdas=lambdas, seed=seed, max_concurrent=max_concurrent,
        dataset=dataset, data_dir=data_dir, gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial,
    )  # fmt: skip
    spec = load_space(space, overrides)
    if spec.strategy != "compare":
        raise ConfigError(f"space {spec.name!r} has strategy {spec.strategy!r}: compare needs strategy 'compare' (e.g. table3)")
    check_data_dir(spec.dataset, spec.data_dir)
    folder = out / spec.name
    if resume:
        if not folder.is_dir():
            raise WartuneError(f"nothing to resume in {str(folder)!r}: no earlier compare was started there")
    else:
        check_folder(folder, resume=False, overwrite=overwrite)
        if overwrite and folder.exists():
            shutil.rmtree(folder)
    err_console.print(f"compare [bold]{spec.name}[/bold]: thin {spec.thin_model} → {', '.join(spec.models)}, results in {folder}")
    def sinks_for(part: Any) -> list[Any]:
        return mlflow_sinks(part, out, tracking_uri, no_mlflow, experiment=f"{spec.name}/{part.name}")

    outcome = run_compare(
        spec, out, resume=resume, registry=registry, address=address, num_cpus=num_cpus, num_gpus=num_gpus,
        storage=storage, sinks_for=sinks_for,
    )
    from wartune.results.plots import write_plots
    from wartune.results.report import write_summary
    from wartune.results.store import TRIAL_SCHEMA, TRIALS_FILE, read_rows

    write_plots(folder)
    for part in sorted(p for p in folder.iterdir() if (p / TRIALS_FILE).is_file()):
        write_summary(part, f"{spec.name}/{part.name}", read_rows(part / TRIALS_FILE, TRIAL_SCHEMA))
        write_plots(part)
    table = Table(title=f"{spec.name}: strategies per width (metrics %, cost in device-seconds)")
    for col in ("model", "strategy", "λ", "natural", "robust", "stability", "trials", "cost s", "cost / grid"):
        table.add_column(col, justify="left" if col in ("model", "strategy") else "right")
    for r in outcome.rows:
        table.add_row(
            r["model"], r["strategy"], f"{r['lambda_final']:.2f}", f"{100 * r['nat_acc']:.2f}", f"{100 * r['rob_acc']:.2f}",
            f"{100 * r['stability']:.2f}", str(r["trials"]), f"{r['total_seconds']:.0f}",
            "–" if r["cost_vs_grid"] is None else f"{r['cost_vs_grid']:.2f}",
        )  # fmt: skip
    out_console.print(table)
    out_console.print(f"results: {folder}/compare.parquet, {folder}/compare.md, plots in {folder / 'plots'}")


