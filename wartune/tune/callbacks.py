"""Ray Tune driver callback: turns trial events into sink calls, and exports best models.

Runs on the driver, so sinks (Parquet, MLflow, progress) see every result even when the
trials run on remote nodes that can reach neither the results folder nor MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from wartune import interrupts
from wartune.results.model_files import WEIGHTS_FILE, copy_model_files
from wartune.results.progress import ProgressSink
from wartune.results.sinks import ParquetSink, Sink
from wartune.results.store import MODELS_DIR
from wartune.results.trials import TrialMeta
from wartune.tune import ray_state
from wartune.tune.params import TrialParams, fixed_lambda
from wartune.tune.resume import member_folder
from wartune.tune.running import current
from wartune.tune.stacked_pbt import PBT
from wartune.tune.stacks import MEMBERS, is_stack, member_count, member_id, member_params, trial_ids

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
        self._reported: set[str] = set()  # the trials that reported an epoch to this driver
        self._member_lam: dict[str, float] = {}  # a PBT stack's member -> the λ its last epoch trained with
        self._ended: set[str] = set()  # the trials whose end the sinks were told
        self._closed = False  # the sinks closed at the experiment's end: a late result is not theirs

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
            ProgressSink(self.total_trials, self.epochs, show_seed=self.seeds > 1, title=search.title),
            *(make(search.folder) for make in search.sinks),
        ]

    @property
    def models_dir(self) -> Path:
        return self.folder / MODELS_DIR

    def _config(self, trial: Any, result: dict | None = None) -> dict[str, Any]:
        """The config the trial ran with when it reported `result` (else its last result's).
        Not `trial.config`: PBT may already have put the next λ there, before this result's
        row or the trial's end is written."""
        if result is not None and result.get("config"):
            self._ran_with[trial.trial_id] = result["config"]
        return self._ran_with.get(trial.trial_id) or trial.config

    def _meta(self, trial: Any, unit: str, config: dict[str, Any]) -> TrialMeta:
        """The meta of `unit`: the Ray trial itself, or (`unit` not its id) one member of the
        stack it trains, with `config` the member's."""
        return TrialParams.parse(config).meta(
            unit,
            **self._ran_on.get(unit, {"device": "cpu"}),
            checkpoint=str(Path(MODELS_DIR) / unit),
            model_dir=str(self.models_dir / unit),
            restarts=int(getattr(trial, "num_failures", 0) or 0),
            stack=trial.trial_id if unit != trial.trial_id else None,
        )

    def _units(self, trial: Any, config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The trials a Ray trial stands for (a stack's members, `stacks.py`), each with its config."""
        if not is_stack(config):
            return [(trial.trial_id, config)]
        units = [(member_id(trial.trial_id, i), member_params(config, i)) for i in range(member_count(config))]
        # a PBT stack's member trains on with the λ an exploit gave it: its rows name that λ
        return [(unit, {**c, "lam": fixed_lambda(self._member_lam[unit])} if unit in self._member_lam else c) for unit, c in units]

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
        if self._closed or trial.trial_id in self._ended:  # an epoch that reached Ray while it stopped the trial:
            return  # its checkpoint is Ray's to resume from; the tables were closed on what was recorded
        self._reported.add(trial.trial_id)
        config = self._config(trial, result)
        if is_stack(config):  # one result per member (a member that diverged, or was dropped, has none)
            reports = [(member_id(trial.trial_id, m["member"]), m) for m in result.get(MEMBERS, [])]
            if PBT in config:
                self._member_lam.update({unit: float(m["lambda_last"]) for unit, m in reports if "lambda_last" in m})
            units = dict(self._units(trial, config))
            each = [(unit, units[unit], report) for unit, report in reports]
        else:
            each = [(trial.trial_id, config, result)]
        for unit, unit_config, report in each:
            ran_on = self._ran_on.setdefault(unit, {"device": "cpu"})
            ran_on.update({k: report[k] for k in ("device", "precision", "graphs") if report.get(k)})
            self._writing(self._each, "on_epoch", self._meta(trial, unit, unit_config), report)
        if self.ray_state_dir is not None:
            ray_state.backup(self.ray_state_dir)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "finished", None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "error", _error_line(trial))

    def _end(self, trial: Any, status: str, error: str | None) -> None:
        if self._closed:
            return
        self._ended.add(trial.trial_id)
        config = self._config(trial)
        self._writing(self._export_best_models, trial, config)
        for unit, unit_config in self._units(trial, config):
            self._writing(self._each, "on_trial_end", self._meta(trial, unit, unit_config), status, error)

    def _each(self, method: str, *args: Any) -> None:
        for sink in self.sinks:
            getattr(sink, method)(*args)

    def _export_best_models(self, trial: Any, config: dict[str, Any]) -> None:
        """Copy the best-so-far weights out of the trial's latest checkpoint (each file
        atomically); a stack's checkpoint holds each member's in its own folder."""
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        with checkpoint.as_directory() as folder:
            if not is_stack(config):
                copy_model_files(Path(folder), self.models_dir / trial.trial_id)
                return
            for i in range(member_count(config)):
                if (Path(folder) / member_folder(i) / WEIGHTS_FILE).is_file():  # none: diverged in its first epoch
                    copy_model_files(Path(folder) / member_folder(i), self.models_dir / member_id(trial.trial_id, i))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """The tables' last write; a trial that a stop signal left unfinished, with epochs to
        show, ends `interrupted` (not `running`), its MLflow run KILLED (`interrupts.py`)."""
        if interrupts.received() is not None:  # Ray marks the trials it stopped TERMINATED, never ended
            for trial in trials:
                if trial.trial_id in self._reported and trial.trial_id not in self._ended:
                    self._end(trial, "interrupted", None)
        self._closed = True
        known = {unit for t in trials for unit in trial_ids(t.trial_id, t.config)}
        for sink in self.sinks:
            if isinstance(sink, ParquetSink):
                self._writing(sink.forget_except, known)
                self._writing(sink.close)
            else:
                sink.close()
