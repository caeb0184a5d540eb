"""A finished search's best models in MLflow, and its best in the Model Registry.

The tracking runs say what each trial measured; a model in MLflow is what someone loads
later without wartune. The search's best trial and the best of each width (`best_trial`'s
rule) are logged into their trial's nested run as MLflow 3 logged models, compiled with
TorchScript (`torch.jit.script`): `mlflow.pytorch.load_model` hands the file to
`torch.jit.load`, which needs torch alone (not wartune) and unpickles no Python objects, and
the module it returns is a whole `nn.Module` again: `model.eval()`, `model(x)`,
`model.train()` and fine-tuning work as on the network that was trained. MLflow's `pt2`
format (`torch.export`) loads as safely but as a frozen inference graph whose `eval()` and
`train()` raise NotImplementedError, which breaks the first line every PyTorch user writes.
MLflow files TorchScript under its "pickle" format, so a process that sets
MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false refuses it. The other trials keep only their safetensors files under
`models/<trial>/`, so MLflow's store does not grow by a full network per trial (a WRN-34-10
is 185 MB). `--register-model NAME` registers the best as a new version of NAME, tagged
with the setting and the figures it was chosen by.

This runs on the driver once the search ended, from the search folder, and MLflow is a
view: a store that fails costs one warning line, never the search.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import numpy as np
import pyarrow.parquet as pq
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from wartune.engine.data import TensorDataset, to_float
from wartune.errors import WartuneError, warn
from wartune.results.mlflow_tracker import (
    FAST_FAIL_ENV,
    TRACKING_ERRORS,
    newest_trial_run,
    short_reason,
    unreachable,
)
from wartune.results.model_files import load_model
from wartune.results.store import COMPARE_FILE, TRIALS_FILE
from wartune.results.trials import best_trial, trial_label

MODEL_NAME = "model"  # the logged model's name in its trial's run
EXAMPLES = 5  # test images in the input example (the signature's batch dimension stays open)


def models_to_log(trials: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """(trial, why): the search's best, then each width's best that is another trial.

    Empty when no trial finished; a one-width search logs one model.
    """
    best = best_trial(trials)
    if best is None:
        return []
    chosen = {best["trial_id"]: (best, "search")}
    for width in sorted({t["width"] for t in trials}):
        top = best_trial([t for t in trials if t["width"] == width])
        if top is not None and top["trial_id"] not in chosen:
            chosen[top["trial_id"]] = (top, f"width {width:g}")
    return list(chosen.values())


def input_example(data: TensorDataset, n: int = EXAMPLES) -> np.ndarray:
    """The first training images as the network takes them: float32 in [0, 1], (n, C, H, W)
    (training images: the test split is only ever read to test)."""
    return to_float(data.train_x[:n]).cpu().numpy()


def version_tags(trial: dict[str, Any], search: str) -> dict[str, str]:
    """What a registered version was chosen from and by: the search, its setting, its figures."""
    setting = {"lambda": trial["lambda_setting"]} if trial["lambda_setting"] is not None else {"zeta": trial["zeta_used"]}
    tags = {"search": search, "trial_id": trial["trial_id"], "model": trial["model"], "dataset": trial["dataset"],
            **setting, "eps": trial["eps"], "val_rob_acc": trial["val_rob_acc"], "test_rob_acc": trial["test_rob_acc"],
            "test_nat_acc": trial["test_nat_acc"]}  # fmt: skip
    return {k: str(v) for k, v in tags.items()}


@contextmanager
def tracking_at(uri: str) -> Iterator[None]:
    """MLflow's fluent calls (log_model, register_model) against `uri`, then the caller's URI back."""
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None unsets it again


def scripted(model: torch.nn.Module, name: str) -> torch.jit.ScriptModule:
    """The network compiled with TorchScript, train/eval switch and all (`torch.jit.trace`
    would freeze the mode it ran in). torch 2.14 marks torch.jit deprecated; its FutureWarning
    is kept out of the search's output, and a net TorchScript cannot compile is one warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return torch.jit.script(model.eval())
        except (RuntimeError, torch.jit.frontend.FrontendError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise WartuneError(f"TorchScript cannot compile {name}: {reason}") from None


def log_trial_model(tracking_uri: str, run_id: str, folder: Path, trial: dict[str, Any], example: np.ndarray,
                    tags: dict[str, str]) -> str:  # fmt: skip
    """Log the trial's best weights (`models/<trial>/`, safetensors) into its run; returns the model URI.

    The signature comes from the example's logits; the run keeps its status (a run resumed
    with the fluent API would otherwise end FINISHED, or FAILED if logging fails).
    """
    if not trial.get("checkpoint"):
        raise WartuneError(f"trial {trial['trial_id']} has no saved model")
    model, meta = load_model(folder / trial["checkpoint"])
    with torch.no_grad():
        logits = model(torch.from_numpy(example)).numpy()
    described = {k: meta[k] for k in ("model", "dataset", "in_channels", "image_size", "num_classes", "eps") if k in meta}
    script = scripted(model, meta.get("model", trial["model"]))
    with tracking_at(tracking_uri), _quiet_torchscript_notes():
        status = MlflowClient().get_run(run_id).info.status
        mlflow.start_run(run_id=run_id)
        try:
            info = mlflow.pytorch.log_model(
                script, name=MODEL_NAME, signature=infer_signature(example, logits), input_example=example,
                serialization_format="pickle", pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                metadata={"wartune": described, "format": "torchscript"}, tags=tags,
            )  # fmt: skip
        finally:
            mlflow.end_run(status=status)
    return info.model_uri


@contextmanager
def _quiet_torchscript_notes() -> Iterator[None]:
    """Keep three notes out of the search's output while MLflow saves (and reloads, to check
    the input example) a TorchScript model: MLflow's that its "pickle" format may run code on
    load (`torch.jit.load` unpickles no Python objects), torch's that it dispatched to
    `torch.jit.load`, and torch's that torch.jit is deprecated (the README says so)."""
    logger = logging.getLogger("mlflow.pytorch")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TorchScript archive.*", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*", category=FutureWarning)
            yield
    finally:
        logger.setLevel(before)


def log_models(folder: Path, trials: list[dict[str, Any]], tracking_uri: str, experiment: str, example: np.ndarray,
               also: dict[str, Any] | None = None) -> dict[str, str]:  # fmt: skip
    """Log `models_to_log(trials)` (and `also`, a trial chosen elsewhere) into their runs.

    Returns trial id -> model URI. Raises what MLflow raises; a trial without a run (MLflow
    was down all along) is skipped with a warning.
    """
    chosen = models_to_log(trials)
    if also is not None and all(t["trial_id"] != also["trial_id"] for t, _ in chosen):
        chosen.append((also, "compare"))
    client = MlflowClient(tracking_uri)
    logged = {}
    for trial, best_of in chosen:
        run_id = newest_trial_run(client, experiment, trial["trial_id"])
        if run_id is None:
            warn(f"MLflow model of {trial_label(trial)} skipped: no run of that trial in experiment {experiment!r}")
            continue
        tags = {"search": experiment, "trial_id": trial["trial_id"], "best_of": best_of}
        logged[trial["trial_id"]] = log_trial_model(tracking_uri, run_id, folder, trial, example, tags)
    return logged


def register(tracking_uri: str, name: str, model_uri: str, trial: dict[str, Any], search: str) -> ModelVersion:
    """A new version of registered model `name` (created if new) holding `model_uri`, with `version_tags`."""
    with tracking_at(tracking_uri):
        return mlflow.register_model(model_uri, name, tags=version_tags(trial, search))


def publish_search_models(folder: Path, tracking_uri: str, experiment: str, data: TensorDataset,
                          register_as: str | None = None) -> ModelVersion | None:  # fmt: skip
    """The end of a search: its best models into MLflow, its best registered as `register_as`.

    Returns the registered version (None when nothing was registered); warns, never raises.
    """
    with _failures_warned(register_as):
        trials = pq.read_table(folder / TRIALS_FILE).to_pylist()
        logged = log_models(folder, trials, tracking_uri, experiment, input_example(data))
        return _register_best(tracking_uri, register_as, best_trial(trials), logged, experiment)
    return None


def publish_compare_models(root: Path, tracking_uri: str, compare: str, data: TensorDataset,
                           register_as: str | None = None) -> ModelVersion | None:  # fmt: skip
    """`publish_search_models` for each part of a compare (experiment `compare/part`).

    The compare's best is the best (`best_trial`) of the trials compare.parquet's rows name:
    the strategies' winners on the target widths, not the thin-net calibration. It is
    logged in its part even when a tie made another trial that part's best.
    """
    with _failures_warned(register_as):
        example = input_example(data)
        parts = {p: pq.read_table(p / TRIALS_FILE).to_pylist() for p in sorted(root.iterdir()) if (p / TRIALS_FILE).is_file()}
        named = {r["best_trial"] for r in pq.read_table(root / COMPARE_FILE).to_pylist()}
        best = best_trial([t for trials in parts.values() for t in trials if t["trial_id"] in named])
        logged, best_in = {}, compare
        for part, trials in parts.items():
            also = best if best is not None and any(t["trial_id"] == best["trial_id"] for t in trials) else None
            logged.update(log_models(part, trials, tracking_uri, f"{compare}/{part.name}", example, also))
            best_in = f"{compare}/{part.name}" if also is not None else best_in
        return _register_best(tracking_uri, register_as, best, logged, best_in)
    return None


def _register_best(tracking_uri: str, name: str | None, best: dict[str, Any] | None, logged: dict[str, str],
                   search: str) -> ModelVersion | None:  # fmt: skip
    if name is None:
        return None
    if best is None or best["trial_id"] not in logged:
        warn(f"no model registered as {name!r}: the search has no finished trial with a logged model")
        return None
    return register(tracking_uri, name, logged[best["trial_id"]], best, search)


@contextmanager
def _failures_warned(register_as: str | None) -> Iterator[None]:
    """MLflow or a model file failing: one warning line. An unreachable store was already
    reported by the live sink, so it is repeated only when a registration was asked for."""
    for key, value in FAST_FAIL_ENV.items():
        os.environ.setdefault(key, value)
    what = f"model not registered as {register_as!r}" if register_as else "models not logged"
    try:
        yield
    except TRACKING_ERRORS as err:
        if register_as or not unreachable(err):
            warn(f"MLflow {what} ({short_reason(err)})")
    except WartuneError as err:
        warn(f"MLflow {what} ({err})")
