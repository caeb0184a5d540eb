"""The flags every search-like command shares, declared once as one typed dataclass.

Each field is one flag: its type carries the typer Option, its metadata says what the flag
is for. A *space* flag overrides a search-space key (merged into the YAML before
validation, so a bad flag reads like a bad key); a *run* flag says where and how Ray runs
(`run_search`'s keywords); an *output* flag says where results, MLflow runs and the ζ
registry go. `search_flags` attaches the fields to a command, so a new shared flag is one
new field here and nothing else.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_type_hints

import typer

from wartune.cli.options import (
    DataDirOpt,
    OutOpt,
    RegistryOpt,
    TrackingOpt,
    parse_lambdas,
    parse_names,
    parse_validation,
)

Role = Literal["space", "run", "output"]


def space_key(key: str, convert: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Metadata of a flag that overrides search-space key `key` (`resources.gpu` for a nested one)."""
    return {"role": "space", "key": key, "convert": convert}


RUN: dict[str, Any] = {"role": "run"}
OUTPUT: dict[str, Any] = {"role": "output"}


def one_or_many(models: list[str] | None) -> str | list[str] | None:
    """Repeated --model as the space's `model`: one name stays a name, several sweep widths."""
    if not models:
        return None
    return models[0] if len(models) == 1 else list(models)


@dataclass(frozen=True)
class SearchFlags:
    """The options of search, calibrate, transfer and compare; None keeps the space file's value."""

    model: Annotated[list[str] | None, typer.Option("--model", help="Model name(s), e.g. wrn34-0.5; repeat for several.")] = field(
        default=None, metadata=space_key("model", one_or_many)
    )
    epochs: Annotated[int | None, typer.Option(help="Training epochs per trial.")] = field(default=None, metadata=space_key("epochs"))
    objective: Annotated[str | None, typer.Option(help="trades, madry, mart (Wang et al. 2020), fgsm-rs (fast AT, Wong et al. 2020) or trades-awp (AWP, Wu et al. 2020).")] = field(default=None, metadata=space_key("objective"))
    lambdas: Annotated[str | None, typer.Option(help="Comma-separated λ grid, e.g. 6,9,12.")] = field(
        default=None, metadata=space_key("lambda", parse_lambdas)
    )
    objectives: Annotated[str | None, typer.Option(help="Optuna: trade these trials.parquet columns off in one multi-objective study, comma-separated, each NAME or NAME:DIRECTION: rob_acc:max, nat_acc:max, stability:max.")] = field(
        default=None, metadata=space_key("objectives", parse_names)
    )
    sampler: Annotated[str | None, typer.Option(help="Optuna's sampler: tpe or nsga2.")] = field(default=None, metadata=space_key("sampler"))
    dataset: Annotated[str | None, typer.Option(help="digits, mnist, cifar10, cifar100, svhn, or synthetic-<one of the last four> (random data of its shape and size: no files).")] = field(default=None, metadata=space_key("dataset"))
    data_dir: DataDirOpt = field(default=None, metadata=space_key("data_dir", str))
    out: OutOpt = field(default=Path("runs"), metadata=OUTPUT)
    name: Annotated[str | None, typer.Option(help="Search name (its folder under --out).")] = field(default=None, metadata=space_key("name"))
    validation: Annotated[str | None, typer.Option(help="The validation split every choice reads, held out of the training split: N images or a fraction (0.15); default: the dataset's (15 % of digits, 5,000 MNIST, 1,000 CIFAR / SVHN).")] = field(
        default=None, metadata=space_key("validation", parse_validation)
    )
    seed: Annotated[int | None, typer.Option(help="Random seed of every trial.")] = field(default=None, metadata=space_key("seed"))
    seeds: Annotated[int | None, typer.Option(help="Repeat every setting with seeds SEED..SEED+N-1; tables show mean ± sd.")] = field(
        default=None, metadata=space_key("seeds")
    )
    final_attack: Annotated[str | None, typer.Option(help="At the search's end, attack the best trials with standard AutoAttack: autoattack or none.")] = field(
        default=None, metadata=space_key("final_attack")
    )
    final_attack_top: Annotated[int | None, typer.Option(help="The final attack takes the best K trials by PGD-20 (per strategy, model and seed).")] = field(
        default=None, metadata=space_key("final_attack_top")
    )
    precision: Annotated[str | None, typer.Option(help="fp32, bf16, fp16 or auto (bf16 for nets of 2 M parameters or more on a GPU that has it, else fp32).")] = field(
        default=None, metadata=space_key("precision")
    )
    graphs: Annotated[str | None, typer.Option(help="auto, on or off: each trial's step captured once as a CUDA graph and replayed (auto: on a CUDA GPU).")] = field(
        default=None, metadata=space_key("graphs")
    )
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="Wrap each trial's model in torch.compile.")] = field(
        default=None, metadata=space_key("compile")
    )
    gpus_per_trial: Annotated[float | None, typer.Option(help="GPU share per trial, e.g. 0.25 packs four on a GPU.")] = field(
        default=None, metadata=space_key("resources.gpu")
    )
    cpus_per_trial: Annotated[float | None, typer.Option(help="CPUs per trial.")] = field(default=None, metadata=space_key("resources.cpu"))
    max_concurrent: Annotated[int | None, typer.Option(help="At most this many trials at once.")] = field(
        default=None, metadata=space_key("max_concurrent")
    )
    stack: Annotated[int | None, typer.Option(help="Train up to K trials of one model (differing in λ and seed) as one grouped network; 1: each alone.")] = field(
        default=None, metadata=space_key("stack")
    )
    resume: Annotated[bool, typer.Option(help="Continue an interrupted search of the same name.")] = field(default=False, metadata=RUN)
    overwrite: Annotated[bool, typer.Option(help="Delete an earlier search of the same name first.")] = field(default=False, metadata=RUN)
    address: Annotated[str | None, typer.Option(help="Ray cluster to join, e.g. auto.")] = field(default=None, metadata=RUN)
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray (default: all).")] = field(default=None, metadata=RUN)
    num_gpus: Annotated[float | None, typer.Option(help="GPUs the local Ray declares (default: detected).")] = field(default=None, metadata=RUN)
    storage: Annotated[str | None, typer.Option(help="Shared path or s3:// URI for trial checkpoints on a cluster.")] = field(
        default=None, metadata=RUN
    )
    tracking_uri: TrackingOpt = field(default=None, metadata=OUTPUT)
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="Do not log to MLflow.")] = field(default=False, metadata=OUTPUT)
    registry: RegistryOpt = field(default=None, metadata=OUTPUT)
    register_model: Annotated[str | None, typer.Option(help="Register the search's best model in the MLflow Model Registry under this name.")] = field(
        default=None, metadata=OUTPUT
    )

    def space_overrides(self, **fixed: Any) -> dict[str, Any]:
        """The space flags as search-space keys, then the command's own `fixed` keys; None values are left out."""
        out: dict[str, Any] = {}
        for f in fields_of("space"):
            value = getattr(self, f.name)
            convert = f.metadata["convert"]
            _put(out, f.metadata["key"], convert(value) if convert is not None and value is not None else value)
        for key, value in fixed.items():
            _put(out, key, value)
        return out

    def run_options(self) -> dict[str, Any]:
        """The run flags as `run_search` / `run_compare` keywords."""
        return {f.name: getattr(self, f.name) for f in fields_of("run")}


def fields_of(role: Role) -> list[Field[Any]]:
    """The fields of one role, in declaration order."""
    return [f for f in fields(SearchFlags) if f.metadata["role"] == role]


def _put(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted `key` in `tree` unless `value` is None (None keeps the file's value)."""
    if value is None:
        return
    *parents, leaf = key.split(".")
    for parent in parents:
        tree = tree.setdefault(parent, {})
    tree[leaf] = value


def _with_help(annotation: Any, text: str) -> Any:
    """The same Annotated option with another help text (the option object is shared, so copy it)."""
    base, option = get_args(annotation)
    option = copy.copy(option)
    option.help = text
    return Annotated[base, option]


def search_flags(
    *, without: tuple[str, ...] = (), help_text: Mapping[str, str] | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command every `SearchFlags` field as an option, and call it with `flags: SearchFlags`.

    Typer builds options from the callback's signature and type hints, so the wrapper's
    signature is the command's own parameters plus the fields; `without` names the fields
    that do not apply to the command (they keep their defaults), `help_text` rewords a field's
    help for it.
    """
    hints = get_type_hints(SearchFlags, include_extras=True)
    help_text = help_text or {}

    def attach(command: Callable[..., None]) -> Callable[..., None]:
        own_hints = get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=own_hints[p.name]) for p in inspect.signature(command).parameters.values() if p.name != "flags"]
        shared = [f for f in fields(SearchFlags) if f.name not in without]
        if clash := {p.name for p in own} & {f.name for f in shared}:
            raise TypeError(f"{command.__name__}: parameters {sorted(clash)} are SearchFlags fields; pass them in `without`")
        params = own + [
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                annotation=_with_help(hints[f.name], help_text[f.name]) if f.name in help_text else hints[f.name],
            )  # fmt: skip
            for f in shared
        ]
        names = [f.name for f in shared]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> None:
            flags = SearchFlags(**{name: kwargs.pop(name) for name in names})
            command(flags=flags, **kwargs)

        wrapper.__signature__ = inspect.Signature([p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return attach
