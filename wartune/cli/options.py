"""Shared command-line options and the helpers that turn flags into search settings."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from wartune.errors import ConfigError

# Wide enough for the results table when output goes to a file or CI log.
out_console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)

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




def ray_options(
    resume: bool, overwrite: bool, address: str | None, num_cpus: int | None, num_gpus: float | None, storage: str | None
) -> dict[str, Any]:
    """The flags that say where and how Ray runs a search, as `run_search` keywords."""
    return {"resume": resume, "overwrite": overwrite, "address": address, "num_cpus": num_cpus,
            "num_gpus": num_gpus, "storage": storage}  # fmt: skip
