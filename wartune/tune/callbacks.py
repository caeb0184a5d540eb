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
from wartune.tune.params import TrialParams


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
    `Tuner.restore` can rebuild it; this callback therefore holds only plain settings and
    builds its sinks when the experiment starts (`setup`), on the first run and on resume.
    """

    def __init__(self, folder: Path, total_trials: int | None, epochs: int, extra: list[Any] | None = None) -> None:
        self.folder = folder
        self.models_dir = folder / MODELS_DIR
        self.total_trials = total_trials
        self.epochs = epochs
        self.extra = extra or []  # picklable sink factories: called with the search folder, return a Sink
        self.sinks: list[Sink] = []
        self._device: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["sinks"], state["_device"] = [], {}
        return state

    def setup(self, **info: Any) -> None:
        self.sinks = [
            ParquetSink(self.folder),
            ProgressSink(self.total_trials, self.epochs),
            *(make(self.folder) for make in self.extra),
        ]

    def _meta(self, trial: Any) -> TrialMeta:
        return TrialParams.parse(trial.config).meta(
            trial.trial_id,
            device=self._device.get(trial.trial_id, "cpu"),
            checkpoint=str(Path(MODELS_DIR) / trial.trial_id),
            model_dir=str(self.models_dir / trial.trial_id),
            restarts=int(getattr(trial, "num_failures", 0) or 0),
        )

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._device[trial.trial_id] = result.get("device", "cpu")
        meta = self._meta(trial)
        for sink in self.sinks:
            sink.on_epoch(meta, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._export_best_model(trial)
        self._end(trial, "finished", None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._export_best_model(trial)
        self._end(trial, "error", _error_line(trial))

    def _end(self, trial: Any, status: str, error: str | None) -> None:
        meta = self._meta(trial)
        for sink in self.sinks:
            sink.on_trial_end(meta, status, error)

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
                sink.forget_except(known)
            sink.close()
