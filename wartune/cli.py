"""The `wartune` command line: parses, validates, and calls the layers below.

Any `WartuneError` (a problem the user can fix) becomes one line on stderr and exit
status 2, as do command-line usage errors; nothing else is caught.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer import Abort, Exit

try:  # typer >= 0.2x vendors its own click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer on stock click
    from click.exceptions import ClickException  # type: ignore[assignment]

from wartune.errors import ConfigError, WartuneError

app = typer.Typer(
    help="Tune adversarial training: λ searches, WAR and stability metrics on Ray Tune.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Wide enough for the results table when output goes to a file or CI log.
out_console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)



@app.callback()
def root() -> None:
    """Tune adversarial training: λ searches, WAR and stability metrics on Ray Tune."""


zeta_app = typer.Typer(help="The ζ registry: thin-net calibrations that WAR transfers.", no_args_is_help=True)
app.add_typer(zeta_app, name="zeta")

# Options shared by the commands that run a search.
SpaceOpt = Annotated[str, typer.Option("--space", "-s", help="Shipped space name (e.g. lambda_grid) or a path to a YAML file.")]
ModelOpt = Annotated[list[str] | None, typer.Option("--model", help="Model name(s), e.g. wrn34-0.5; repeat for several.")]
EpochsOpt = Annotated[int | None, typer.Option(help="Training epochs per trial.")]
ObjectiveOpt = Annotated[str | None, typer.Option(help="trades or madry.")]
DatasetOpt = Annotated[str | None, typer.Option(help="digits, cifar10, cifar100 or svhn.")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Local folder with CIFAR / SVHN (never downloaded).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder that holds every search's results.")]
NameOpt = Annotated[str | None, typer.Option(help="Search name (its folder under --out).")]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed of every trial.")]
GpusOpt = Annotated[float | None, typer.Option(help="GPU share per trial, e.g. 0.25 packs four on a GPU.")]
CpusOpt = Annotated[float | None, typer.Option(help="CPUs per trial.")]
ConcurrentOpt = Annotated[int | None, typer.Option(help="At most this many trials at once.")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue an interrupted search of the same name.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Delete an earlier search of the same name first.")]
AddressOpt = Annotated[str | None, typer.Option(help="Ray cluster to join, e.g. auto.")]
NumCpusOpt = Annotated[int | None, typer.Option(help="CPUs of the local Ray (default: all).")]
StorageOpt = Annotated[str | None, typer.Option(help="Shared path or s3:// URI for trial checkpoints on a cluster.")]
NumGpusOpt = Annotated[float | None, typer.Option(help="GPUs the local Ray declares (default: detected).")]
TrackingOpt = Annotated[str | None, typer.Option(help="MLflow tracking URI (default: sqlite:///OUT/mlflow.db).")]
NoMlflowOpt = Annotated[bool, typer.Option("--no-mlflow", help="Do not log to MLflow.")]
RegistryOpt = Annotated[Path | None, typer.Option(help="ζ registry file (default: OUT/zeta.parquet).")]
ForceOpt = Annotated[bool, typer.Option(help="Use a ζ measured on another dataset / objective / ε.")]


def parse_lambdas(text: str | None) -> list[float] | None:
    """'1,3,6' -> [1.0, 3.0, 6.0]; validation of the values happens in the space model."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--lambdas: expected comma-separated numbers such as 6,9,12, got {text!r}") from None


def space_overrides(**flags: Any) -> dict[str, Any]:
    """CLI flags as search-space keys (None means: keep the file's value)."""
    out: dict[str, Any] = {
        "name": flags.get("name"),
        "strategy": flags.get("strategy"),
        "model": flags.get("model") or None,
        "epochs": flags.get("epochs"),
        "objective": flags.get("objective"),
        "lambda": parse_lambdas(flags.get("lambdas")),
        "zeta_from": flags.get("zeta_from"),
        "seed": flags.get("seed"),
        "max_concurrent": flags.get("max_concurrent"),
        "dataset": flags.get("dataset"),
        "data_dir": str(flags["data_dir"]) if flags.get("data_dir") else None,
        "resources": {"gpu": flags.get("gpus_per_trial"), "cpu": flags.get("cpus_per_trial")},
    }
    if isinstance(out["model"], list) and len(out["model"]) == 1:
        out["model"] = out["model"][0]
    return out


def registry_at(registry: Path | None, out: Path) -> Any:
    from wartune.zeta import ZetaRegistry

    return ZetaRegistry(registry or out / "zeta.parquet")


def space_eps(spec: Any) -> float:
    """The training ε of a space: its own, else the dataset's default."""
    from wartune.data import dataset_info

    return spec.attack.eps or dataset_info(spec.dataset).eps


def mlflow_sinks(spec: Any, out: Path, tracking_uri: str | None, no_mlflow: bool, experiment: str | None = None) -> list[Any]:
    """The MLflow sink factory of a search, unless --no-mlflow."""
    if no_mlflow:
        return []
    from wartune.tracking import MlflowSinkFactory, default_tracking_uri

    tags = {"strategy": spec.strategy, "dataset": spec.dataset, "objective": spec.objective}
    params = spec.model_dump(mode="json", by_alias=True)
    return [MlflowSinkFactory(tracking_uri or default_tracking_uri(out), experiment or spec.name, params, tags)]


def run_and_report(
    spec: Any, out: Path, run: dict[str, Any], *, zeta: float | None = None, lam: Any = None,
    tracking_uri: str | None = None, no_mlflow: bool = False,
) -> Any:  # fmt: skip
    """Validate the folder, run the search, print its table, write summary.md and plots."""
    from wartune.data import check_data_dir
    from wartune.plots import write_plots
    from wartune.report import rich_table, rich_width_tables, write_summary
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
        from wartune.tracking import log_artifacts

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
        entry = registry_at(registry, out).lookup(spec.zeta_from, spec.dataset, spec.objective, space_eps(spec), force)
        zeta = entry.zeta
    run = {"resume": resume, "overwrite": overwrite, "address": address, "num_cpus": num_cpus, "num_gpus": num_gpus,
           "storage": storage}
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
    from wartune.store import TRIAL_SCHEMA, TRIALS_FILE, read_rows
    from wartune.tune.spaces import load_space
    from wartune.zeta import best_trial_entry

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
        run = {"resume": resume, "overwrite": overwrite, "address": address, "num_cpus": num_cpus, "num_gpus": num_gpus,
           "storage": storage}
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
    entry = registry_at(registry, out).lookup(zeta_from, spec.dataset, spec.objective, space_eps(spec), force)
    err_console.print(f"ζ {entry.zeta:.3f} from {entry.describe()} (best λ {entry.best_lambda:g}, {entry.source})")
    lam = war_and_untuned(entry.zeta, spec.alpha, entry.best_lambda) if compare_untuned else None
    run = {"resume": resume, "overwrite": overwrite, "address": address, "num_cpus": num_cpus, "num_gpus": num_gpus,
           "storage": storage}
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

    from wartune.data import check_data_dir
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
    from wartune.plots import write_plots

    write_plots(folder)
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


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="A finished search or compare folder, e.g. runs/lambda_grid.")],
    to_mlflow: Annotated[bool, typer.Option(help="Also log the search to MLflow from its Parquet files.")] = False,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Regenerate summary.md and the plots from the Parquet files alone."""
    from wartune.plots import write_plots
    from wartune.report import rich_table, write_summary
    from wartune.store import TRIAL_SCHEMA, TRIALS_FILE, read_rows

    has_trials = (folder / TRIALS_FILE).is_file()
    if not has_trials and not (folder / "compare.parquet").is_file():
        raise WartuneError(f"{str(folder)!r} holds neither {TRIALS_FILE} nor compare.parquet: not a wartune result folder")
    if has_trials:
        trials = read_rows(folder / TRIALS_FILE, TRIAL_SCHEMA)
        out_console.print(rich_table(trials, f"{folder.name}: metrics at each trial's best epoch (%)"))
        out_console.print(f"summary: {write_summary(folder, folder.name, trials)}")
    for path in write_plots(folder):
        out_console.print(f"plot: {path}")
    if to_mlflow:
        if not has_trials:
            raise WartuneError(f"--to-mlflow logs a search folder; {str(folder)!r} is a compare folder: log its parts")
        from wartune.tracking import default_tracking_uri, log_search

        uri = tracking_uri or default_tracking_uri(folder.parent)
        run_id = log_search(folder, uri)
        out_console.print(f"logged to MLflow at {uri}: parent run {run_id}")


@zeta_app.command("list")
def zeta_list(registry: RegistryOpt = None, out: OutOpt = Path("runs")) -> None:
    """Print the ζ registry (the paper's built-in row included)."""
    from rich.table import Table

    reg = registry_at(registry, out)
    table = Table(title=f"ζ registry {reg.path}")
    for col in ("model", "dataset", "objective", "ε", "best λ", "ζ", "ζ spread", "robust %", "search", "source", "when"):
        table.add_column(col)
    for e in reg.entries():
        table.add_row(
            e.model, e.dataset, e.objective, f"{e.eps:.4g}", f"{e.best_lambda:g}", f"{e.zeta:.3f}",
            "–" if e.zeta_step_std is None else f"{e.zeta_step_std:.3f}",
            "–" if e.rob_acc is None else f"{100 * e.rob_acc:.2f}", e.search, e.source, e.created_at,
        )  # fmt: skip
    out_console.print(table)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one-line errors with exit status 2."""
    try:
        app(args=argv, standalone_mode=False)
    except WartuneError as err:
        err_console.print(f"wartune: error: {err}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except ClickException as err:  # usage errors: unknown option, bad type, missing value
        if err.format_message():  # empty when no arguments were given and help was shown
            err_console.print(f"wartune: error: {err.format_message()}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except Abort:
        err_console.print("wartune: aborted")
        sys.exit(130)
    except Exit as err:
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
