"""Commands that read results: report, evaluate, zeta list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wartune.cli.app import app, zeta_app
from wartune.cli.options import (
    ZETA,
    DataDirOpt,
    OutOpt,
    RegistryOpt,
    TrackingOpt,
    out_console,
    print_table,
    registry_at,
)
from wartune.errors import ConfigError, WartuneError


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="A finished search or compare folder, e.g. runs/lambda_grid.")],
    to_mlflow: Annotated[bool, typer.Option(help="Also log the search to MLflow from its Parquet files.")] = False,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Regenerate summary.md and the plots (a compare's compare.md too) from the Parquet files alone."""
    from wartune.results.plots import write_plots
    from wartune.results.report import rich_table, write_summary
    from wartune.results.store import COMPARE_FILE, TRIAL_SCHEMA, TRIALS_FILE, read_rows

    has_trials = (folder / TRIALS_FILE).is_file()
    if not has_trials and not (folder / COMPARE_FILE).is_file():
        raise WartuneError(f"{str(folder)!r} holds neither {TRIALS_FILE} nor {COMPARE_FILE}: not a wartune result folder")
    if not has_trials:  # a compare: compare.md, its plots, and each part's summary and plots
        from wartune.tune.compare import rebuild_compare_reports

        if to_mlflow:
            raise WartuneError(f"--to-mlflow logs a search folder; {str(folder)!r} is a compare folder: log its parts")
        for path in rebuild_compare_reports(folder):
            out_console.print(f"written: {path}")
        return
    trials = read_rows(folder / TRIALS_FILE, TRIAL_SCHEMA)
    out_console.print(rich_table(trials, f"{folder.name}: metrics at each trial's best epoch (%)"))
    out_console.print(f"summary: {write_summary(folder, folder.name, trials)}")
    for path in write_plots(folder):
        out_console.print(f"plot: {path}")
    if to_mlflow:
        from wartune.results.tracking import default_tracking_uri, log_search

        uri = tracking_uri or default_tracking_uri(folder.parent)
        run_id = log_search(folder, uri)
        out_console.print(f"logged to MLflow at {uri}: parent run {run_id}")


@app.command()
def evaluate(
    model_dir: Annotated[Path | None, typer.Argument(help="A trained model folder, e.g. runs/lambda_grid/models/<trial> (or --weights).")] = None,
    weights: Annotated[Path | None, typer.Option(help="Instead of a model folder: a safetensors file or a torch state_dict from any code "
                                                 "(a 'module.' prefix and a 'state_dict' key are handled); needs --model and --dataset.")] = None,
    model: Annotated[str | None, typer.Option(help="With --weights: the registry network the weights are for, e.g. wrn34-10.")] = None,
    dataset: Annotated[str | None, typer.Option(help="With --weights: the dataset to attack it on (its threat model's ε by default).")] = None,
    attacks: Annotated[str, typer.Option(help="Comma-separated: pgd20, cw, apgd-ce, fab, square, autoattack.")] = "pgd20,cw,fab,square,autoattack",
    max_examples: Annotated[int | None, typer.Option(help="Evaluate on the first N test examples.")] = None,
    eps: Annotated[float | None, typer.Option(help="The attacks' radius in the model's threat norm, L∞ or L2 (default: its evaluation ε).")] = None,
    data_dir: DataDirOpt = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the attacks' randomness (default: the best epoch's evaluation seed, with which PGD-20 repeats the search's figure).")] = None,
    robustbench_json: Annotated[Path | None, typer.Option(
        help="Also write the result as a RobustBench model-zoo entry (JSON); adds autoattack to --attacks.")] = None,
) -> None:
    """Robust accuracy and stability of a trained model under the paper's attacks (Tables 2 and 4)."""
    import torch
    from rich.table import Table

    from wartune.engine.attack_suite import AttackResult, check_attacks, evaluate_attacks
    from wartune.engine.attacks import NORM_LABEL
    from wartune.engine.config import TrainConfig, validate
    from wartune.engine.data import load_dataset
    from wartune.engine.evaluation import eval_seed
    from wartune.results.foreign_weights import load_weights
    from wartune.results.model_files import META_FILE, load_model
    from wartune.results.progress import duration_text
    from wartune.results.robustbench import AUTOATTACK, write_robustbench_json
    from wartune.results.store import EVAL_SCHEMA, read_rows, write_table
    from wartune.results.zeta import now

    names = [a.strip() for a in attacks.split(",") if a.strip()]
    check_attacks(names)
    if robustbench_json is not None and AUTOATTACK not in names:
        names.append(AUTOATTACK)  # RobustBench's robust accuracy is AutoAttack's
        out_console.print(f"--robustbench-json: {AUTOATTACK} added to the attacks")
    if eps is not None and eps <= 0:
        raise ConfigError(f"--eps must be > 0, got {eps}")
    if weights is not None:  # another codebase's checkpoint, into a registry network
        if model_dir is not None or model is None or dataset is None:
            raise ConfigError("--weights needs --model and --dataset, and no model folder")
        net, meta = load_weights(weights, model, dataset)
        evaluation = weights.with_name(weights.name + ".evaluation.parquet")
    else:
        if model_dir is None:
            raise ConfigError("give a model folder (runs/<search>/models/<trial>) or --weights FILE --model NAME --dataset D")
        if not (model_dir / META_FILE).is_file():
            raise WartuneError(f"{str(model_dir)!r} holds no {META_FILE}: give a folder under runs/<search>/models/")
        net, meta = load_model(model_dir)
        evaluation = model_dir / "evaluation.parquet"
    net.to("cuda" if torch.cuda.is_available() else "cpu")
    data = load_dataset(meta["dataset"], data_dir or meta["train_config"].get("data_dir"))
    pgd = validate(TrainConfig, meta["train_config"], source=str(weights or model_dir / META_FILE)).eval_pgd(eps)
    if seed is None and "epoch" in meta:  # the best epoch's own evaluation: PGD-20 on it repeats the recorded figure
        seed = eval_seed(int(meta["train_config"]["seed"]), int(meta["epoch"]))
        out_console.print(f"attack seed {seed}: the best epoch's (epoch {meta['epoch']}), as the search evaluated it")
    elif seed is None:
        seed = 0
        out_console.print("attack seed 0 (--seed sets another)")
    else:
        out_console.print(f"attack seed {seed} (--seed): another draw of the random starts than the search's")
    def said(place: int, name: str, done: AttackResult | None) -> None:  # AutoAttack alone runs for minutes
        if done is None:
            out_console.print(f"attack {place} of {len(names)}: {name} ...", highlight=False)
        else:
            out_console.print(f"attack {place} of {len(names)}: {name}: robust {100 * done.rob_acc:.2f} % "
                              f"on {done.n} images in {duration_text(done.seconds)}", highlight=False)  # fmt: skip

    results = evaluate_attacks(net, data, pgd, names, max_examples, seed=seed, on_attack=said)
    evaluated_at = now()
    table = Table(title=f"{meta['model']} on {meta['dataset']}, {NORM_LABEL[pgd.norm]} ε = {pgd.eps:g} (%)")
    for col in ("attack", "natural", "robust", "stability", "examples", "budget"):
        table.add_column(col, justify="left" if col in ("attack", "budget") else "right")
    rows = []
    for r in results:
        table.add_row(r.attack, f"{100 * r.nat_acc:.2f}", f"{100 * r.rob_acc:.2f}", f"{100 * r.stability:.2f}", str(r.n),
                      r.budget.split(": ", 1)[1])  # fmt: skip
        rows.append({"model": meta["model"], "dataset": meta["dataset"], "attack": r.attack, "eps": r.eps,
                     "nat_acc": r.nat_acc, "rob_acc": r.rob_acc, "stability": r.stability, "examples": r.n,
                     "attack_seed": seed, "pgd_steps": pgd.steps, "pgd_step": pgd.step_size, "evaluated_at": evaluated_at,
                     "budget": r.budget})  # fmt: skip
    # appended: an earlier evaluation (another seed, ε or attack) stays beside this one
    write_table(read_rows(evaluation, EVAL_SCHEMA) + rows, EVAL_SCHEMA, evaluation)
    out_console.print(table)
    out_console.print(f"written: {evaluation}")
    if robustbench_json is not None:
        out_console.print(f"RobustBench entry: {write_robustbench_json(robustbench_json, meta, results)}")


@zeta_app.command("list")
def zeta_list(registry: RegistryOpt = None, out: OutOpt = Path("runs")) -> None:
    """Print the ζ registry (the paper's built-in row included)."""
    from wartune.results.formatting import num, pct

    reg = registry_at(registry, out)
    # one entry a row, narrow enough for a 160-column log: the setting in one cell, the robust
    # accuracy behind the choice (validation) beside the one it reports (test)
    header = ("model", "setting", "best λ (of)", "epochs × seeds", "ζ", "ζ spread", "robust % val / test", "search", "when")
    body = [
        [
            e.model, f"{e.dataset}, {e.objective}, ε {e.eps:.4g}",
            num(e.best_lambda, "{:g}") + (f" ({e.calibration_lambdas})" if e.calibration_lambdas else ""),
            f"{e.calibration_epochs} × {e.calibration_seeds}" if e.calibration_epochs else "–", num(e.zeta, ZETA),
            num(e.zeta_step_std, ZETA), f"{pct(e.val_rob_acc)} / {pct(e.rob_acc)}", e.search, e.created_at[:16],
        ]
        for e in reg.entries()
    ]  # fmt: skip
    print_table(f"ζ registry {reg.path}", header, body, left=header)
