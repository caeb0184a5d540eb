"""Command-line options shared beyond the search flags, and the CLI's printing helpers."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from wartune.errors import ConfigError

# Wide enough for the results table when output goes to a file or CI log.
out_console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)

# Options that search-like commands declare themselves, or that other commands share with
# `SearchFlags` (flags.py); the flags all search-like commands share are its fields.
SpaceOpt = Annotated[str, typer.Option("--space", "-s", help="Shipped space name (e.g. lambda_grid) or a path to a YAML file.")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Local folder with MNIST / CIFAR / SVHN (never downloaded); read by the driver only.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder that holds every search's results.")]
TrackingOpt = Annotated[str | None, typer.Option(help="MLflow tracking URI (default: sqlite:///OUT/mlflow.db).")]
RegistryOpt = Annotated[Path | None, typer.Option(help="ζ registry file (default: OUT/zeta.parquet).")]
ForceOpt = Annotated[bool, typer.Option(help="Use a ζ measured on another dataset / objective / ε.")]

ZETA = "{:.3f}"  # ζ as printed, for `num`


def parse_lambdas(text: str | None) -> list[float] | None:
    """'1,3,6' -> [1.0, 3.0, 6.0]; validation of the values happens in the space model."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--lambdas: expected comma-separated numbers such as 6,9,12, got {text!r}") from None


def parse_validation(text: str | None) -> dict[str, Any] | None:
    """'1000' -> {'examples': 1000}; '0.15' -> {'fraction': 0.15}; the space model checks the value
    (0 is refused there, with the reason)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--validation: expected a number of images (1000) or a fraction of the training split (0.15), got {text!r}") from None
    if value.is_integer():
        return {"examples": int(value)}
    if not 0 < value < 1:
        raise ConfigError(f"--validation: a fraction of the training split is between 0 and 1, a number of images whole; got {text!r}")
    return {"fraction": value}


def parse_names(text: str | None) -> list[str] | None:
    """'rob_acc, nat_acc:max' -> ['rob_acc', 'nat_acc:max']; the space model checks each name."""
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]


def registry_at(registry: Path | None, out: Path) -> Any:
    from wartune.results.store import ZETA_FILE
    from wartune.results.zeta import ZetaRegistry

    return ZetaRegistry(registry or out / ZETA_FILE)


def mlflow_sinks(spec: Any, out: Path, tracking_uri: str | None, no_mlflow: bool, experiment: str | None = None) -> list[Any]:
    """The MLflow sink factory of a search, unless --no-mlflow."""
    if no_mlflow:
        return []
    from wartune.results.tracking import MlflowSinkFactory, default_tracking_uri

    tags = {"strategy": spec.strategy, "dataset": spec.dataset, "objective": spec.objective}
    params = spec.model_dump(mode="json", by_alias=True)
    return [MlflowSinkFactory(tracking_uri or default_tracking_uri(out), experiment or spec.name, params, tags)]


def check_register_model(name: str | None, no_mlflow: bool) -> None:
    """--register-model NAME, refused before anything runs: it needs MLflow, and a name the registry takes."""
    if name is None:
        return
    if no_mlflow:
        raise ConfigError("--register-model registers in MLflow's Model Registry: it cannot go with --no-mlflow")
    if not name.strip() or any(c in name for c in "/:"):
        raise ConfigError(f"--register-model: {name!r} is not a registered model name (not blank, no '/' or ':')")


def print_registered(version: Any) -> None:
    """One line for a model version `--register-model` created (None: nothing was registered)."""
    if version is not None:
        uri = f"models:/{version.name}/{version.version}"
        out_console.print(f"MLflow Model Registry: {version.name} version {version.version}, load with mlflow.pytorch.load_model({uri!r})", highlight=False)


def print_table(title: str, header: Sequence[str], body: Sequence[Sequence[str]], left: Sequence[str] = ()) -> None:
    """Rows already formatted as text, as a rich table on stdout; `left` columns align left."""
    table = Table(title=title)
    for col in header:
        table.add_column(col, justify="left" if col in left else "right")
    for row in body:
        table.add_row(*row)
    out_console.print(table)
