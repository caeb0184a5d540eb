"""Commands that run searches: search, calibrate, transfer, compare.

Each takes the shared `SearchFlags` (flags.py) plus its own options, loads the space,
calls the tune layer and prints; the rules live below.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wartune.cli.app import app
from wartune.cli.flags import SearchFlags, search_flags
from wartune.cli.options import (
    ZETA,
    ForceOpt,
    SpaceOpt,
    check_register_model,
    err_console,
    mlflow_sinks,
    out_console,
    print_registered,
    print_table,
    registry_at,
)
from wartune.errors import ConfigError, WartuneError, warn

if TYPE_CHECKING:
    from wartune.results.zeta import ZetaEntry

OPTUNA_ONLY = ("objectives", "sampler")  # flags of an optuna search; calibrate, transfer and compare run none


def run_and_report(spec: Any, flags: SearchFlags, *, calibration: ZetaEntry | None = None, lam: Any = None) -> Any:
    """Validate the folder, load the data (here only: trials get it from Ray's object store),
    run the search, print its table, write summary.md and plots."""
    from wartune.engine.data import check_data_dir, load_dataset
    from wartune.results.formatting import pct_ci
    from wartune.results.plots import write_plots
    from wartune.results.report import (
        SEED_COLUMNS,
        rich_table,
        rich_width_tables,
        seed_rows,
        write_summary,
    )
    from wartune.results.seeds import repeated
    from wartune.results.store import EPOCHS_FILE, PLOTS_DIR, TRIALS_FILE
    from wartune.results.trials import at_chance, best_trial, rivals_within_noise, trial_label
    from wartune.tune.strategies import (
        check_folder,
        check_stack_fits,
        param_space,
        run_search,
        stack_size,
    )

    check_data_dir(spec.dataset, spec.data_dir)
    check_stack_fits(spec, stack_size(param_space(spec, calibration, lam)))
    check_register_model(flags.register_model, flags.no_mlflow)
    check_folder(flags.out / spec.name, flags.resume, flags.overwrite, flags.storage, space=spec)
    data = load_dataset(spec.dataset, spec.data_dir)  # a missing or corrupt dataset fails before any output
    err_console.print(
        f"search [bold]{spec.name}[/bold]: strategy {spec.strategy}, {spec.objective} on {spec.dataset}, "
        f"results in {flags.out / spec.name}"
    )
    sinks = mlflow_sinks(spec, flags.out, flags.tracking_uri, flags.no_mlflow)
    outcome = run_search(spec, flags.out, calibration=calibration, lam=lam, extra_sinks=sinks, data=data, **flags.run_options())
    out_console.print(rich_table(outcome.trials, f"{spec.name}: each trial's best epoch by validation, its test figures with 95 % intervals (%)"))
    for table in rich_width_tables(outcome.trials):
        out_console.print(table)
    if repeated(outcome.trials):
        print_table("mean ± sd over seeds (%)", SEED_COLUMNS, seed_rows(outcome.trials), left=("strategy", "model"))
    if chance := at_chance(outcome.trials, data.info.num_classes):
        names = ", ".join(trial_label(t) for t in chance)
        warn(f"{len(chance)} trial(s) ended at chance natural accuracy ({names}): their stability and ζ say "
             "nothing about a trained net (a net predicting one class is perfectly stable); train more epochs")  # fmt: skip
    if rivals := rivals_within_noise(outcome.trials):
        best = best_trial(outcome.trials)
        assert best is not None
        warn(f"the best trial {trial_label(best)} leads {len(rivals)} other(s) ({', '.join(trial_label(t) for t in rivals[:4])}"
             f"{', ...' if len(rivals) > 4 else ''}) by less than its 95 % interval on {best['val_examples']} validation images "
             f"(robust {pct_ci(best, 'val_rob_acc')} %): the search cannot tell them apart; more validation images "
             "(--validation) or seeds (--seeds) would")  # fmt: skip
    summary = write_summary(outcome.folder, spec.name, outcome.trials)
    plots = write_plots(outcome.folder)
    if sinks:
        from wartune.results.mlflow_models import publish_search_models
        from wartune.results.tracking import log_artifacts

        log_artifacts(sinks[0].tracking_uri, sinks[0].experiment, [summary, *plots])
        print_registered(publish_search_models(outcome.folder, sinks[0].tracking_uri, sinks[0].experiment, data, flags.register_model))
    folder = outcome.folder
    out_console.print(f"results: {folder / TRIALS_FILE}, {EPOCHS_FILE}; summary: {summary}; plots: {folder / PLOTS_DIR}")
    return outcome


@app.command()
@search_flags()
def search(*, flags: SearchFlags, space: SpaceOpt = "lambda_grid", force: ForceOpt = False) -> None:
    """Run a hyperparameter search over λ (and widths) and print its table."""
    from wartune.tune.spaces import load_space

    spec = load_space(space, flags.space_overrides())
    calibration = None
    if spec.strategy == "war":
        assert spec.zeta_from is not None
        calibration = registry_at(flags.registry, flags.out).lookup(spec.zeta_from, spec.dataset, spec.objective, spec.eps, force)
    run_and_report(spec, flags, calibration=calibration)


def one_model(models: list[str] | None) -> str | None:
    """calibrate's --model: one thin network, or none with --from."""
    if models and len(models) > 1:
        raise ConfigError(f"calibrate takes one --model (the thin network), got {len(models)}: {', '.join(models)}")
    return models[0] if models else None


@app.command()
@search_flags(without=OPTUNA_ONLY, help_text={"model": "The thin model to calibrate, e.g. wrn34-0.5."})
def calibrate(
    *,
    flags: SearchFlags,
    space: SpaceOpt = "lambda_grid",
    from_search: Annotated[Path | None, typer.Option("--from", help="Read a finished search folder instead of running one.")] = None,
) -> None:
    """Tune λ on a thin model, pick the best by robust accuracy, and store its ζ."""
    from wartune.engine.data import dataset_info
    from wartune.results.formatting import num, pct
    from wartune.results.store import TRIAL_SCHEMA, TRIALS_FILE, read_rows
    from wartune.results.zeta import best_trial_entry, doubt
    from wartune.tune.spaces import folder_name, load_space

    model = one_model(flags.model)
    reg = registry_at(flags.registry, flags.out)
    if from_search is not None:
        if flags.register_model is not None:
            raise ConfigError("--register-model registers the best of a search that runs; calibrate --from runs none")
        if not (from_search / TRIALS_FILE).is_file():
            raise WartuneError(f"--from {str(from_search)!r}: no {TRIALS_FILE} there (not a wartune search folder)")
        trials, search_name = read_rows(from_search / TRIALS_FILE, TRIAL_SCHEMA), from_search.name
    else:
        if model is None:
            raise ConfigError("calibrate needs --model (the thin network, e.g. wrn34-0.5) or --from a finished search")
        spec = load_space(space, flags.space_overrides(name=flags.name or folder_name(f"calibrate-{model}"), strategy="grid"))
        trials, search_name = run_and_report(spec, flags).trials, spec.name
    entry = best_trial_entry(trials, search_name, model)
    reg.put(entry)
    if why := doubt(entry, dataset_info(entry.dataset).num_classes):
        warn(why)
    out_console.print(
        f"ζ registry {reg.path}: {entry.describe()} → best λ {entry.best_lambda:g}, ζ {num(entry.zeta, ZETA)} "
        f"(per-step spread {num(entry.zeta_step_std, ZETA)}), robust {pct(entry.rob_acc)} %",
        highlight=False,
    )


@app.command()
@search_flags(without=("lambdas", *OPTUNA_ONLY))
def transfer(
    *,
    flags: SearchFlags,
    zeta_from: Annotated[str, typer.Option("--zeta-from", help="ζ registry entry: the thin model (e.g. wrn34-0.5) where it has one calibration for this setting, else MODEL@SEARCH or MODEL@latest (wartune zeta list).")],
    compare_untuned: Annotated[bool, typer.Option(help="Also train with the thin net's best λ fixed (the paper's N/A row).")] = False,
    force: ForceOpt = False,
    space: SpaceOpt = "war",
    alpha: Annotated[float | None, typer.Option(help="WAR's step size α, the space's war.alpha (default controller: 0.3 per epoch; the paper's Algorithm 1, war: paper, 0.1 per step).")] = None,
) -> None:
    """Train wider models once each with WAR, using the ζ calibrated on a thin one."""
    from wartune.engine.data import dataset_info
    from wartune.results.formatting import num
    from wartune.results.zeta import doubt
    from wartune.tune.spaces import folder_name, load_space
    from wartune.tune.strategies import war_and_untuned

    thin = zeta_from.partition("@")[0]
    # named after the thin net and the wide target(s): another target is another search
    targets = f"-to-{'_'.join(flags.model)}" if flags.model else ""
    name = flags.name or folder_name(f"transfer-{thin}{targets}")
    overrides = flags.space_overrides(name=name, strategy="war", zeta_from=zeta_from, **{"war.alpha": alpha})
    spec = load_space(space, overrides)
    entry = registry_at(flags.registry, flags.out).lookup(zeta_from, spec.dataset, spec.objective, spec.eps, force)
    if why := doubt(entry, dataset_info(spec.dataset).num_classes):
        warn(why)
    err_console.print(
        f"ζ {num(entry.zeta, ZETA)} from {entry.reference}: {entry.describe()} (best λ {entry.best_lambda:g}, "
        f"{entry.source} {entry.created_at})"
    )
    err_console.print(f"controller: {spec.war.describe()}", highlight=False, markup=False)
    lam = war_and_untuned(spec.war, entry) if compare_untuned else None
    run_and_report(spec, flags, calibration=entry, lam=lam)


@app.command()
@search_flags(without=OPTUNA_ONLY)
def compare(*, flags: SearchFlags, space: SpaceOpt = "table3") -> None:
    """Table 3: untuned λ, grid, Optuna and WAR on every target width, with compute cost."""
    from wartune.results.store import COMPARE_FILE, COMPARE_MD, PLOTS_DIR
    from wartune.tune.compare import COLUMNS, check_compare, compare_table, noise_lines, run_compare
    from wartune.tune.spaces import load_space

    spec = load_space(space, flags.space_overrides())
    check_register_model(flags.register_model, flags.no_mlflow)
    folder = check_compare(spec, flags.out, flags.resume, flags.overwrite)
    err_console.print(f"compare [bold]{spec.name}[/bold]: thin {spec.thin_model} → {', '.join(spec.models)}, results in {folder}")

    def sinks_for(part: Any) -> list[Any]:
        return mlflow_sinks(part, flags.out, flags.tracking_uri, flags.no_mlflow, experiment=f"{spec.name}/{part.name}")

    outcome = run_compare(spec, flags.out, registry=flags.registry, sinks_for=sinks_for, **flags.run_options())
    title = f"{spec.name}: strategies per width, test figures with 95 % intervals (cost in device-seconds)"
    print_table(title, COLUMNS, compare_table(outcome.rows), left=("model", "strategy"))
    for line in noise_lines(outcome.rows):
        out_console.print(line, highlight=False)
    if not flags.no_mlflow:
        from wartune.engine.data import load_dataset
        from wartune.results.mlflow_models import publish_compare_models
        from wartune.results.tracking import default_tracking_uri

        uri, data = flags.tracking_uri or default_tracking_uri(flags.out), load_dataset(spec.dataset, spec.data_dir)
        print_registered(publish_compare_models(folder, uri, spec.name, data, flags.register_model))
    out_console.print(f"results: {folder / COMPARE_FILE}, {folder / COMPARE_MD}, plots in {folder / PLOTS_DIR}")
