"""Ray Tune driver callback: turns trial events into sink calls, and exports best models.

Runs on the driver, so sinks (Parquet, MLflow, progress) see every result even when the
trials run on remote nodes that can reach neither the results folder nor MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from wartune.results.model_files import copy_model_files
from wartune.results.progress import ProgressSink
from wartune.results.sinks import ParquetSink, Sink
from wartune.results.store import MODELS_DIR
from wartune.results.trials import TrialMeta
from wartune.tune import ray_state
from wartune.tune.params import TrialParams
from wartune.tune.running import current

# Search folders the driver could not write to (disk full, read-only), with the reason: the
# callback records it and aborts the experiment, `run_search` reports it in one line.
WRITE_FAILURES: dict[str, str] = {}


def describe_write_failure(err: OSError) -> str:
    where = f" {str(err.filename)!r}" if err.filename else ""
    return f"cannot write{where}: {err.strerror or err}"


def _error_line(trial: Any) -> str:
    """The last line of a trial's error file: the exception and its message."""
    path = getattr(trial, "error_file", None)
    try:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()] if path else []
    except OSError:
        lines = []
    return lines[-1].strip() if lines else "trial failed"


class SinkCallback(tune.Callback):
    """Forwards every trial result and trial end to the sinks.

    Ray pickles the run config (callbacks included) into the experiment folder so that
    `Tuner.restore` can rebuild it. This callback therefore holds only plain settings, no path
    and no sink: when the experiment starts (`setup`, on the first run and on resume) it takes
    the search folder and the extra sinks from the driver running it now (`running.current`),
    so a folder that moved, or a resume with other MLflow flags, is served where it is.
    `objectives` (a multi-objective search's) are what trials.parquet's front is marked by;
    with several `seeds` the progress lines name each trial's seed.
    """

    SETTINGS = ("total_trials", "epochs", "objectives", "seeds")  # what Ray pickles

    def __init__(self, total_trials: int | None, epochs: int, objectives: list[str] | None = None, seeds: int = 1) -> None:
        self.total_trials = total_trials
        self.epochs = epochs
        self.objectives = objectives
        self.seeds = seeds
        self._unbound()

    def _unbound(self) -> None:
        self.folder = Path()  # the search folder, set by `setup`
        self.ray_state_dir: Path | None = None  # Ray's local experiment folder, backed up each result
        self.sinks: list[Sink] = []
        self._ran_on: dict[str, dict[str, Any]] = {}  # trial id -> its results' device, precision, graphs
        self._ran_with: dict[str, dict[str, Any]] = {}  # trial id -> the config of its latest result

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.SETTINGS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """The settings; one pickled by wartune 0.1.0 also held its folder and MLflow sinks, left unused."""
        self.__dict__.update({k: state.get(k) for k in self.SETTINGS})
        self.seeds = self.seeds or 1
        self._unbound()

    def setup(self, **info: Any) -> None:
        search = current()
        self.folder, self.ray_state_dir = search.folder, search.ray_experiment
        self.sinks = [
            ParquetSink(search.folder, self.objectives),
            ProgressSink(self.total_trials, self.epochs, show_seed=self.seeds > 1),
            *(make(search.folder) for make in search.sinks),
        ]

    @property
    def models_dir(self) -> Path:
        return self.folder / MODELS_DIR

    def _meta(self, trial: Any, result: dict | None = None) -> TrialMeta:
        """The trial's meta, from the config it ran with when it reported `result` (else its
        last epoch's). Not `trial.config`: PBT may already have put the next λ there, before
        this result's row or the trial's end is written."""
        if result is not None and result.get("config"):
            self._ran_with[trial.trial_id] = result["config"]
        config = self._ran_with.get(trial.trial_id) or trial.config
        return TrialParams.parse(config).meta(
            trial.trial_id,
            **self._ran_on.get(trial.trial_id, {"device": "cpu"}),
            checkpoint=str(Path(MODELS_DIR) / trial.trial_id),
            model_dir=str(self.models_dir / trial.trial_id),
            restarts=int(getattr(trial, "num_failures", 0) or 0),
        )

    def _writing(self, write: Any, *args: Any) -> None:
        """Run a step that writes the search folder; a failure aborts the experiment.

        Aborting (the exception leaves `Tuner.fit`) rather than stopping the trials keeps
        them unfinished in Ray's experiment state, so `--resume` continues them; stopped
        trials would count as done. The tables stay as they were: intact and readable.
        """
        key = str(self.folder)
        if key in WRITE_FAILURES:
            return
        try:
            write(*args)
        except OSError as err:
            WRITE_FAILURES[key] = describe_write_failure(err)
            raise

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        ran_on = self._ran_on.setdefault(trial.trial_id, {"device": "cpu"})
        ran_on.update({k: result[k] for k in ("device", "precision", "graphs") if result.get(k)})
        self._writing(self._each, "on_epoch", self._meta(trial, result), result)
        if self.ray_state_dir is not None:
            ray_state.backup(self.ray_state_dir)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._writing(self._export_best_model, trial)
        self._writing(self._each, "on_trial_end", self._meta(trial), "finished", None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._writing(self._export_best_model, trial)
        self._writing(self._each, "on_trial_end", self._meta(trial), "error", _error_line(trial))

    def _each(self, method: str, *args: Any) -> None:
        for sink in self.sinks:
            getattr(sink, method)(*args)

    def _export_best_model(self, trial: Any) -> None:
        """Copy the best-so-far weights out of the trial's latest checkpoint (each file atomically)."""
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        with checkpoint.as_directory() as folder:
            copy_model_files(Path(folder), self.models_dir / trial.trial_id)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        known = {t.trial_id for t in trials}
        for sink in self.sinks:
            if isinstance(sink, ParquetSink):
                self._writing(sink.forget_except, known)
                self._writing(sink.close)
            else:
                sink.close()
