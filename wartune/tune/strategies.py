"""Strategies: how a search space becomes Ray Tune trials, and running the search.

- `grid`: every λ in the list (× every model): the paper's manual tuning;
- `fixed`: one λ for every model: the paper's "no tuning" (N/A) row;
- `war`: one WAR run per model with ζ from the registry (Algorithm 1);
- `optuna`: TPE or NSGA-II over a λ range with a trial budget (its study: `study.py`);
- `pbt`: Population Based Training, a population of `trials` whose λ moves during training
  (the generic rival of WAR for a hyperparameter that should change as training goes).
Ray is the engine: one process here, a cluster with `--address auto`; no own scheduler.
The driver loads the dataset once and hands it to every trial through Ray's object store,
so only the driver's machine needs --data-dir.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from wartune import interrupts
from wartune.engine.data import TensorDataset, dataset_info, load_dataset
from wartune.engine.models import create_model
from wartune.engine.stack_memory import free_bytes, largest_stack, member_bytes
from wartune.engine.stacking import stackable
from wartune.engine.validation import held_out_indices
from wartune.errors import WartuneError, warn
from wartune.results import manifest
from wartune.results.locks import check_unlocked, exclusive
from wartune.results.store import (
    EPOCH_SCHEMA,
    EPOCHS_FILE,
    SPACE_FILE,
    TRIAL_SCHEMA,
    TRIALS_FILE,
    read_rows,
)
from wartune.results.zeta import ZetaEntry
from wartune.tune import ray_pickles, ray_state
from wartune.tune.callbacks import WRITE_FAILURES, SinkCallback
from wartune.tune.dimensions import TUNED, domains, most_epochs
from wartune.tune.final_verdict import final_verdict
from wartune.tune.member_rungs import ASHA, asha_scheduler, member_rungs
from wartune.tune.params import fixed_lambda, trial_params, war_lambda
from wartune.tune.pbt import lambda_domain, population_based_training
from wartune.tune.reaper import children, start_reaper, stop_reaper
from wartune.tune.result_logs import result_loggers
from wartune.tune.running import RunningSearch, running
from wartune.tune.space_changes import check_resume_matches
from wartune.tune.spaces import SAMPLED, STACKED_STRATEGIES, SearchSpace, WarSettings
from wartune.tune.stacked_pbt import population_params, stacked_pbt
from wartune.tune.stacks import MEMBERS, SCHEDULER, balanced_chunks, stacked_params
from wartune.tune.study import search_algorithm
from wartune.tune.trainable import adversarial_training_trial

EXPERIMENT = "tune"
# The dataset, or a reference to it already in Ray's object store (compare puts it once for all its parts).
SearchData = TensorDataset | ray.ObjectRef


@dataclass
class SearchOutcome:
    """Where a finished search's files are, and its per-trial rows."""

    folder: Path
    space: SearchSpace
    trials: list[dict[str, Any]]


def lambda_param(space: SearchSpace, calibration: ZetaEntry | None = None) -> Any:
    """The trial's λ: a grid, a fixed value, a WAR spec or an Optuna distribution."""
    if space.strategy == "grid":
        return tune.grid_search(space.lambdas)
    if space.strategy == "fixed":
        return space.lambdas[0]
    if space.strategy == "war":
        if calibration is None:
            raise WartuneError("strategy 'war' needs a ζ (from the registry)")
        return war_lambda(space.war, calibration)
    return lambda_domain(space)


def trial_scheduler(space: SearchSpace, params: dict[str, Any] | None = None) -> Any:
    """PBT for strategy pbt; ASHA stops trials whose robust accuracy lags at each rung (scheduler:
    asha). Stacks ask ASHA about each member themselves (`member_rungs.py`): Ray's scheduler,
    which would judge a whole stack, stays out."""
    if space.strategy == "pbt":
        return None if stacked_pbt(space) else population_based_training(space)
    if space.scheduler != ASHA or (params or {}).get(SCHEDULER) == ASHA:
        return None
    return asha_scheduler(most_epochs(space.search, space.epochs))


def war_and_untuned(war: WarSettings, calibration: ZetaEntry) -> Any:
    """WAR beside the thin net's best λ held fixed (Table 3's "no tuning" column)."""
    return tune.grid_search([war_lambda(war, calibration, "war"), fixed_lambda(calibration.best_lambda, "untuned")])


def _grid_size(value: Any) -> int:
    return len(value["grid_search"]) if isinstance(value, dict) and "grid_search" in value else 1


def ray_samples(space: SearchSpace) -> int:
    """Ray's `num_samples`: Optuna's and PBT's budget (in stacks when Optuna's trials stack), else 1 (grids)."""
    if space.strategy not in SAMPLED:
        return 1
    trials = space.trials or 1
    if stacked_pbt(space):
        return 1  # one stack holds the population
    return len(balanced_chunks(list(range(trials)), space.stack)) if space.strategy == "optuna" else trials


def count_trials(space: SearchSpace, params: dict[str, Any]) -> int:
    """Trials the search will run: the grid's product, times the sample budget (Optuna); a
    stacked search counts its members (each a trial where users look)."""
    if MEMBERS in params:
        return _grid_size(params["model"]) * sum(len(stack) for stack in params[MEMBERS]["grid_search"])
    samples = (space.trials or 1) if space.strategy in SAMPLED else 1
    tuned = math.prod(_grid_size(v) for v in params.get(TUNED, {}).values())
    return _grid_size(params["model"]) * _grid_size(params["lam"]) * _grid_size(params["seed"]) * tuned * samples


def param_space(space: SearchSpace, calibration: ZetaEntry | None = None, lam: Any = None) -> dict[str, Any]:
    """Ray's param space; `lam` replaces the strategy's λ parameter when given. With `stack` > 1
    the trials of each model are grouped into stacks (`stacks.py`)."""
    models, seeds = space.models, space.seed_values
    model = models[0] if len(models) == 1 else tune.grid_search(models)
    seed = seeds[0] if len(seeds) == 1 else tune.grid_search(seeds)
    params = trial_params(space, model, lam if lam is not None else lambda_param(space, calibration), space.zeta_from, seed)
    if space.search:  # dimensions beyond λ; the evaluation stays at the threat model's ε and step
        params[TUNED] = domains(space.search, space.strategy)
        if "eps" in space.search or "attack_step" in space.search:
            pgd = space.eval_pgd()
            params["base"] = {**params["base"], "eval": {**params["base"]["eval"], "eps": pgd.eps, "step": pgd.step_size}}
    if space.strategy in STACKED_STRATEGIES:
        params = stacked_params(params, space.stack)
    elif stacked_pbt(space):  # the population as one stack, exploiting in memory
        params = population_params(params, space)
    if space.scheduler == ASHA and stacks_trials(space, params):  # each stack asks ASHA about its members
        params[SCHEDULER] = ASHA
    return params


def stacks_trials(space: SearchSpace, params: dict[str, Any]) -> bool:
    """Whether the search's Ray trials are stacks (a stacked param space, or Optuna asking for stacks)."""
    return MEMBERS in params or (space.strategy == "optuna" and space.stack > 1)


def stack_size(params: dict[str, Any]) -> int:
    """The largest stack of a param space (1: trials alone)."""
    return max(len(stack) for stack in params[MEMBERS]["grid_search"]) if MEMBERS in params else 1


def check_stack_fits(space: SearchSpace, size: int, models: list[str] | None = None) -> None:
    """Refuse, in one line, stacks of `size` members larger than the memory they would run in
    (`stack_memory.py`: this machine's free memory, or the GPU share of a trial)."""
    if size <= 1:
        return
    device = "cuda" if space.resources.gpu > 0 else "cpu"
    room = free_bytes(device, space.resources.gpu)
    info = dataset_info(space.dataset)
    for model in models or space.models:
        with torch.device("meta"):  # no memory, no arithmetic: only which layers it has
            why = stackable(model, create_model(model, info.num_classes, info.in_channels, info.image_size))
        if why:
            raise WartuneError(f"{why}: use --stack 1")
        fits = largest_stack(model, info, space.batch_size, room)
        if fits < size:
            need = size * member_bytes(model, info, space.batch_size) / 2**30
            advice = f"use --stack {fits} or less" if fits else "it does not fit even alone"
            raise WartuneError(
                f"a stack of {size} {model} trials needs at least {need:.1f} GiB, more than the "
                f"{room / 2**30:.1f} GiB free for it on this machine's {device}: {advice}"
            )


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, num_gpus: float | None = None) -> Iterator[None]:
    """Join a cluster (`address`) or start a local Ray; shut down only what we started."""
    if ray.is_initialized():
        yield
        return
    # Ray's result logs come from `result_loggers()` (without the step trace), not Ray's defaults.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Snapshot the experiment (trial list, searcher state) every second, not every 10 s,
    # so a killed driver loses at most a second of bookkeeping.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    # A crashed trial's traceback stays in its error.txt under ray/; the progress display and
    # trials.parquet give its one-line reason, so Ray's own ERROR log would only repeat it.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    reaper = None
    before = children(os.getpid())
    try:
        with interrupts.ray_starting():  # a stop signal meanwhile is raised once Ray stands
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, include_dashboard=False, **kwargs)
                # the processes ray.init started; the watchdog ends them if this driver is killed
                reaper = start_reaper(children(os.getpid()) - before)
        yield
    finally:
        ray.shutdown()
        stop_reaper(reaper)


def storage_root(folder: Path, storage: str | None) -> str:
    """Where Ray keeps the experiment: `<folder>/ray`, or `<storage>/<search>` for a cluster.

    On several nodes every trial must reach its checkpoints, so `--storage` names a shared
    path or an object store URI (s3://, gs://) that pyarrow understands.
    """
    if storage:
        return f"{storage.rstrip('/')}/{folder.name}"
    return str((folder / "ray").resolve())


def lock_path(folder: Path) -> Path:
    """The lock a running search holds: beside its folder, so --overwrite cannot delete it."""
    return folder.with_name(f".{folder.name}.lock")


def claim_folder(folder: Path, kind: str = "search") -> AbstractContextManager[None]:
    """Hold the folder's lock while a search or compare writes there (refused if one runs)."""
    return exclusive(lock_path(folder), f"{kind} {folder.name!r} in {str(folder.parent)!r}")


def check_folder(folder: Path, resume: bool, overwrite: bool, storage: str | None = None, kind: str = "search",
                 space: SearchSpace | None = None) -> None:  # fmt: skip
    """Refuse early: a search of this name running now, a folder that does not fit the flags,
    or one to resume that a newer wartune wrote or that `space` would change."""
    check_unlocked(lock_path(folder), f"{kind} {folder.name!r} in {str(folder.parent)!r}")
    _check_contents(folder, resume, overwrite, storage)
    if resume:
        manifest.check_not_newer(folder)
        if space is not None:
            check_resume_matches(folder, space)


def _check_contents(folder: Path, resume: bool, overwrite: bool, storage: str | None) -> None:
    """Refuse to mix two searches in one folder; resume needs an earlier search there."""
    if resume:
        if not tune.Tuner.can_restore(f"{storage_root(folder, storage)}/{EXPERIMENT}"):
            raise WartuneError(f"nothing to resume in {str(folder)!r}: no earlier search was started there")
    elif folder.exists() and any(folder.iterdir()) and not overwrite:
        raise WartuneError(
            f"{str(folder)!r} already holds a search: --resume to continue it, "
            "--overwrite to start again, or --name for a new one"
        )


def prepare_folder(folder: Path, resume: bool, overwrite: bool, storage: str | None = None) -> None:
    """Check the folder, then clear it (with overwrite) and create it; call it under `claim_folder`."""
    _check_contents(folder, resume, overwrite, storage)
    if not resume and folder.exists() and overwrite:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def run_search(
    space: SearchSpace,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: float | None = None,
    storage: str | None = None,
    calibration: ZetaEntry | None = None,
    lam: Any = None,
    extra_sinks: list[Callable[[], Any]] | None = None,
    data: SearchData | None = None,
    title: str | None = None,
) -> SearchOutcome:
    """Run (or resume) a search; results land in `out/<space.name>/`.

    `calibration` is the ζ registry entry WAR runs from (strategy war: its ζ, and its best
    λ for `war.lambda0: thin`); `lam` replaces the strategy's λ parameter.
    `data` is the dataset the trials train on; by default it is loaded here, on the driver,
    from the space's `data_dir` (a resumed search loads it again). `title` heads its progress
    (default: the search's name).
    """
    folder = out / space.name
    params = param_space(space, calibration, lam)  # fails before anything is written
    check_stack_fits(space, stack_size(params))
    if data is None:
        data = load_dataset(space.dataset, space.data_dir)
    validation = held_out_split(space, data)  # a validation size the data cannot give fails here
    with claim_folder(folder):
        prepare_folder(folder, resume, overwrite, storage)
        if resume:
            check_resume_matches(folder, space)
        _fit(space, folder, params, resume, address, num_cpus, num_gpus, storage, extra_sinks, data, validation,
             title or f"search {space.name}")  # fmt: skip
    return SearchOutcome(folder, space, read_rows(folder / TRIALS_FILE, TRIAL_SCHEMA))


def held_out_split(space: SearchSpace, data: SearchData) -> dict[str, Any]:
    """The validation split every trial of the search carves (`engine/validation.py`), as the
    manifest records it: the same function on the same data, so the driver's account is the trials'."""
    if not isinstance(data, TensorDataset):
        data = ray.get(data)  # compare's parts share one copy in the object store
    held = held_out_indices(data, space.validation)
    return manifest.validation_record(space.validation.seed, held.tolist(), len(data.train_y))


def trial_trainable(space: SearchSpace, data: SearchData) -> Any:
    """The trainable with its resources and its dataset, which `with_parameters` puts into
    Ray's object store (a reference is passed on as is); every trial, on any node, reads it
    there. Restoring a Tuner needs this same wrapping again (same trainable name)."""
    with_data = tune.with_parameters(adversarial_training_trial, data=data)
    return tune.with_resources(with_data, {"cpu": space.resources.cpu, "gpu": space.resources.gpu})


def _fit(space: SearchSpace, folder: Path, params: dict[str, Any], resume: bool, address: str | None,
         num_cpus: int | None, num_gpus: float | None, storage: str | None,
         extra_sinks: list[Callable[..., Any]] | None, data: SearchData,
         validation: dict[str, Any] | None = None, title: str | None = None) -> None:  # fmt: skip
    """Write the resolved space (or make an older or moved folder ready to resume), then build
    (or restore) the Tuner and run it to the end, bound to this folder and these sinks."""
    folder = folder.resolve()
    experiments = storage_root(folder, storage)
    local = Path(experiments) / EXPERIMENT if storage is None else None  # Ray's experiment, inside the folder
    if resume:
        _ready_to_resume(folder, local)
    else:
        import yaml

        (folder / SPACE_FILE).write_text(yaml.safe_dump(space.model_dump(mode="json", by_alias=True), sort_keys=False))
        manifest.record(folder, validation)
    with ray_session(address, num_cpus, num_gpus), running(RunningSearch(folder, tuple(extra_sinks or ()), local, title)):
        trainable = trial_trainable(space, data)
        if resume:
            tuner = tune.Tuner.restore(f"{experiments}/{EXPERIMENT}", trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = _new_tuner(space, folder, params, experiments, trainable)
        WRITE_FAILURES.pop(str(folder), None)
        try:
            with _member_rungs(space, folder, params):
                tuner.fit()
        except Exception as err:  # noqa: BLE001 - Ray stopping its trials after a stop signal
            if interrupts.received() is None:
                raise
            _stop_error(folder, err)
        finally:
            failure = WRITE_FAILURES.pop(str(folder), None)
            if failure:  # raised from `finally`: replaces whatever Ray raised after it
                raise WartuneError(
                    f"search {folder.name!r} stopped: {failure}; the tables written before are intact "
                    "(free space or fix the folder, then run again with --resume)"
                )
        if (signum := interrupts.received()) is not None:  # Ray stopped the trials at a safe point
            from wartune.results.report import write_summary

            interrupts.settle()
            write_summary(folder, space.name, read_rows(folder / TRIALS_FILE, TRIAL_SCHEMA))
            raise interrupts.SearchInterrupted(signum, folder, count_trials(space, params))
        final_verdict(space, folder, data, extra_sinks)  # after the sinks closed, in the same Ray session


@contextmanager
def _member_rungs(space: SearchSpace, folder: Path, params: dict[str, Any]) -> Iterator[None]:
    """ASHA for the members of stacks (`member_rungs.py`), its rungs refilled from the epochs
    recorded before (`--resume`); nothing for any other search."""
    if params.get(SCHEDULER) != ASHA:
        yield
        return
    epochs = read_rows(folder / EPOCHS_FILE, EPOCH_SCHEMA) if (folder / EPOCHS_FILE).is_file() else []
    recorded = [(e["trial_id"], e["epoch"], e["val_rob_acc"]) for e in epochs if e.get("stack")]
    with member_rungs(space.name, most_epochs(space.search, space.epochs), recorded):
        yield


def _stop_error(folder: Path, err: Exception) -> None:
    """What Ray raised while it stopped the trials after a stop signal: the records stand (each
    trial's last epoch and checkpoint), so one line and a file say it, not a traceback."""
    import traceback

    path = folder / "stop_error.txt"
    path.write_text("".join(traceback.format_exception(err)))
    warn(f"Ray raised while stopping the trials ({type(err).__name__}; {path}); the recorded epochs stand")


def _ready_to_resume(folder: Path, experiment: Path | None) -> None:
    """Before `Tuner.restore`: a folder an older wartune wrote is upgraded (one line says so), and
    Ray's local state is mended: files torn by a full disk put back, then paths re-rooted where
    the folder moved and Ray's hanging PBT replaced (`ray_pickles`)."""
    if (line := manifest.upgrade(folder)) is not None:
        warn(line)
    if experiment is not None:
        ray_state.repair(experiment)
        ray_pickles.mend(experiment, folder)


def _new_tuner(space: SearchSpace, folder: Path, params: dict[str, Any], experiments: str, trainable: Any) -> tune.Tuner:
    callback = SinkCallback(count_trials(space, params), most_epochs(space.search, space.epochs), space.objectives, space.seeds)
    return tune.Tuner(
        trainable,
        param_space=params,
        tune_config=tune.TuneConfig(
            num_samples=ray_samples(space),
            max_concurrent_trials=space.max_concurrent,
            reuse_actors=True,  # a new trial keeps the worker (torch imported, data loaded)
            search_alg=search_algorithm(space, folder),
            scheduler=trial_scheduler(space, params),
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=experiments,
            verbose=0,
            callbacks=[callback, *result_loggers()],
            # PBT exploits other trials' checkpoints: keep a few more so the donor's is still there
            checkpoint_config=tune.CheckpointConfig(num_to_keep=4 if space.strategy == "pbt" else 2),
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )
