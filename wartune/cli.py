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


@app.callback()
def root() -> None:
    """Tune adversarial training: λ searches, WAR and stability metrics on Ray Tune."""


SpaceOpt = Annotated[str, typer.Option("--space", "-s", help="Shipped space name (e.g. lambda_grid) or a path to a YAML file.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder that holds every search's results.")]


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
        "model": flags.get("model") or None,
        "epochs": flags.get("epochs"),
        "objective": flags.get("objective"),
        "lambda": parse_lambdas(flags.get("lambdas")),
        "seed": flags.get("seed"),
        "max_concurrent": flags.get("max_concurrent"),
        "dataset": flags.get("dataset"),
        "data_dir": str(flags["data_dir"]) if flags.get("data_dir") else None,
        "resources": {"gpu": flags.get("gpus_per_trial"), "cpu": flags.get("cpus_per_trial")},
    }
    if isinstance(out["model"], list) and len(out["model"]) == 1:
        out["model"] = out["model"][0]
    return out


@app.command()
def search(
    space: SpaceOpt = "lambda_grid",
    model: Annotated[list[str] | None, typer.Option(help="Model name(s), e.g. wrn34-0.5; repeat to sweep widths.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per trial.")] = None,
    objective: Annotated[str | None, typer.Option(help="trades or madry.")] = None,
    lambdas: Annotated[str | None, typer.Option(help="Comma-separated λ grid, e.g. 6,9,12.")] = None,
    dataset: Annotated[str | None, typer.Option(help="digits, cifar10, cifar100 or svhn.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Local folder with CIFAR / SVHN (never downloaded).")] = None,
    out: OutOpt = Path("runs"),
    name: Annotated[str | None, typer.Option(help="Search name (folder under --out); default: the space's.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed of every trial.")] = None,
    gpus_per_trial: Annotated[float | None, typer.Option(help="GPU share per trial, e.g. 0.25 packs four on a GPU.")] = None,
    cpus_per_trial: Annotated[float | None, typer.Option(help="CPUs per trial.")] = None,
    max_concurrent: Annotated[int | None, typer.Option(help="At most this many trials at once.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted search of the same name.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Delete an earlier search of the same name first.")] = False,
    address: Annotated[str | None, typer.Option(help="Ray cluster to join, e.g. auto.")] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray (default: all).")] = None,
    num_gpus: Annotated[float | None, typer.Option(help="GPUs the local Ray declares (default: detected).")] = None,
) -> None:
    """Run a hyperparameter search over λ (and widths) and print its table."""
    from wartune.data import check_data_dir
    from wartune.report import rich_table, write_summary
    from wartune.tune.spaces import load_space
    from wartune.tune.strategies import check_folder, run_search

    overrides = space_overrides(
        name=name, model=model, epochs=epochs, objective=objective, lambdas=lambdas, seed=seed,
        max_concurrent=max_concurrent, dataset=dataset, data_dir=data_dir,
        gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial,
    )  # fmt: skip
    spec = load_space(space, overrides)
    check_data_dir(spec.dataset, spec.data_dir)
    check_folder(out / spec.name, resume, overwrite)
    err_console.print(f"search [bold]{spec.name}[/bold]: strategy {spec.strategy}, {spec.objective} on {spec.dataset}, results in {out / spec.name}")
    outcome = run_search(
        spec, out, resume=resume, overwrite=overwrite, address=address, num_cpus=num_cpus, num_gpus=num_gpus
    )
    out_console.print(rich_table(outcome.trials, f"{spec.name}: metrics at each trial's best epoch (%)"))
    summary = write_summary(outcome.folder, spec.name, outcome.trials)
    out_console.print(f"results: {outcome.folder}/trials.parquet, epochs.parquet; summary: {summary}")


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
