"""The search's end under AutoAttack: the best trials' models attacked with standard AutoAttack.

Trials are chosen by PGD-20, the per-epoch attack; RobustBench's standard is AutoAttack, and
PGD-20 can overstate robustness by points (the digits demo's λ = 21 model: 60.8 % robust
under PGD-20, 50.8 % under AutoAttack). With `final_attack: autoattack` the search's end
attacks the best weights of the best `final_attack_top` finished trials of each strategy,
model and seed (all finished trials when unset) with `wartune evaluate --attacks autoattack`'s
attack: standard L∞ AutoAttack at the space's evaluation ε, on the whole test split as the
trials' full-split figures, seeded as `evaluate`'s default, so that command repeats a figure.

Each model is a Ray task with a trial's resources, so a GPU cluster attacks on GPUs; the
task gets the model files' bytes from the driver (no worker needs the search folder) and the
dataset through the object store, as the trials did. Each figure goes into trials.parquet as
it arrives (`aa_rob_acc`, `aa_examples`, `aa_seconds`), after the sinks closed, so a resumed
search attacks only the chosen trials still without one.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from wartune.engine.attacks import NORM_LABEL, PGDConfig
from wartune.engine.data import TensorDataset
from wartune.results.formatting import pct
from wartune.results.model_files import META_FILE, WEIGHTS_FILE
from wartune.results.seeds import group
from wartune.results.store import TRIAL_SCHEMA, TRIALS_FILE, read_rows, write_table
from wartune.results.trials import device_seconds, is_finite, trial_label
from wartune.tune.spaces import SearchSpace

AUTOATTACK = "autoattack"  # the attack suite's name of standard AutoAttack
AUTOATTACK_SEED = 0  # `wartune evaluate`'s default --seed


def _say(text: str) -> None:
    print(f"wartune: {text}", file=sys.stderr, flush=True)


def trials_to_attack(trials: list[dict[str, Any]], top: int | None) -> list[dict[str, Any]]:
    """The chosen trials without an AutoAttack figure yet, best validation PGD-20 robust accuracy first.

    Chosen: the finished trials with a saved model (`best_trial`'s rule), the best `top` of
    each strategy, model and seed (every one when `top` is None), so each cell a table ranks
    (compare's strategies, a width sweep's widths) has its best attacked. Equal accuracies keep
    the table's order, as `best_trial` breaks ties.
    """
    done = [t for t in trials if t["status"] == "finished" and is_finite(t["val_rob_acc"]) and t.get("checkpoint")]
    chosen = []
    for repeats in group(done, key=lambda t: (t["strategy"], t["model"], t["seed"])).values():
        chosen += sorted(repeats, key=lambda t: -t["val_rob_acc"])[:top]
    return sorted((t for t in chosen if not is_finite(t.get("aa_rob_acc"))), key=lambda t: -t["val_rob_acc"])


def _model_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in (WEIGHTS_FILE, META_FILE)}


def attack_model(files: dict[str, bytes], data: TensorDataset, pgd: PGDConfig, threads: int) -> dict[str, Any]:
    """AutoAttack on one saved model, wherever Ray runs it: its robust accuracy, examples, wall and device.

    Runs in fp32 whatever precision the trial trained at, as `wartune evaluate` and RobustBench do.
    """
    import torch

    from wartune.engine.attack_suite import evaluate_attacks
    from wartune.engine.devices import resolve_device
    from wartune.results.model_files import load_model

    torch.set_num_threads(threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(content)
        model, _ = load_model(tmp)
    device = resolve_device("auto")
    [result] = evaluate_attacks(model.to(device), data, pgd, [AUTOATTACK], seed=AUTOATTACK_SEED)
    return {"aa_rob_acc": result.rob_acc, "aa_examples": result.n, "wall": time.perf_counter() - start, "device": device.type}


def record(folder: Path, trial_id: str, figures: dict[str, Any]) -> None:
    """Write one trial's AutoAttack columns into trials.parquet (atomically, every other column kept)."""
    path = folder / TRIALS_FILE
    rows = read_rows(path, TRIAL_SCHEMA)
    for row in rows:
        if row["trial_id"] == trial_id:
            row.update(figures)
    write_table(rows, TRIAL_SCHEMA, path)


def _reason(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


def final_verdict(space: SearchSpace, folder: Path, data: TensorDataset | ray.ObjectRef,
                  extra_sinks: list[Callable[..., Any]] | None = None) -> None:  # fmt: skip
    """Attack the chosen trials' models (`space.final_attack`), in the search's Ray session.

    A task that fails costs its trial's figure and one warning line, never the search: the
    PGD-20 results stand. The figures also go to each trial's MLflow run when MLflow is on.
    """
    if space.final_attack != AUTOATTACK:
        return
    chosen = trials_to_attack(read_rows(folder / TRIALS_FILE, TRIAL_SCHEMA), space.final_attack_top)
    if not chosen:
        return
    cpus, gpus = space.resources.cpu, space.resources.gpu
    pgd = space.eval_pgd()
    _say(f"AutoAttack (standard, {NORM_LABEL[pgd.norm]} ε {pgd.eps:.4g}, the whole test split) on {len(chosen)} trials' best weights")
    ref = data if isinstance(data, ray.ObjectRef) else ray.put(data)
    task = ray.remote(attack_model).options(num_cpus=cpus, num_gpus=gpus, max_retries=1)
    pending = {}
    for trial in chosen:
        try:
            files = _model_files(folder / trial["checkpoint"])
        except OSError as err:
            _say(f"warning: trial {trial_label(trial)} not attacked: cannot read its model ({err.strerror or err})")
            continue
        pending[task.remote(files, ref, pgd, max(1, int(cpus)))] = trial
    figures: dict[str, dict[str, Any]] = {}
    while pending:
        [done], _ = ray.wait(list(pending))
        trial = pending.pop(done)
        try:
            out = ray.get(done)
        except ray.exceptions.RayError as err:
            _say(f"warning: AutoAttack of trial {trial_label(trial)} failed ({_reason(err)}); its PGD-20 figures stand")
            continue
        seconds = device_seconds(out["wall"], out["device"], cpus, gpus)
        figures[trial["trial_id"]] = {"aa_rob_acc": out["aa_rob_acc"], "aa_examples": out["aa_examples"], "aa_seconds": seconds}
        record(folder, trial["trial_id"], figures[trial["trial_id"]])
        robust = f"robust {pct(out['aa_rob_acc'])} % (PGD-20 {pct(trial['test_rob_acc'])} %)"
        _say(f"AutoAttack {trial_label(trial)}: {robust} on {out['aa_examples']} test examples, {seconds:.0f} s")
    _say(f"AutoAttack on {len(figures)} trials: {sum(f['aa_seconds'] for f in figures.values()):.0f} s (device-seconds)")
    _log_to_mlflow(extra_sinks or [], figures)


def _log_to_mlflow(extra_sinks: list[Callable[..., Any]], figures: dict[str, dict[str, Any]]) -> None:
    """Each figure into its trial's run, for every MLflow store the search logs to."""
    if not extra_sinks or not figures:
        return
    from wartune.results.tracking import MlflowSinkFactory, log_final_attack

    metrics = {t: {"aa_rob_acc": f["aa_rob_acc"], "aa_seconds": f["aa_seconds"]} for t, f in figures.items()}
    for make in extra_sinks:
        if isinstance(make, MlflowSinkFactory):
            log_final_attack(make.tracking_uri, make.experiment, metrics)
