"""The Optuna study of an optuna search: its sampler, what it optimises, and its file.

The study lives in the search folder (`optuna.db`), named after the search, so it outlasts
the run: optuna-dashboard and `optuna.load_study` read it, and `--resume` continues it (Ray
restores the searcher, whose storage reopens the file). Ray pickles that storage with the
searcher; it keeps the file's name, not its path, and opens it in the folder of the search
being run (`running.current`), so a search folder that moved keeps its study.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

from wartune.results.pareto import directions
from wartune.tune.running import current
from wartune.tune.spaces import SearchSpace
from wartune.tune.stacked_search import StackedSearch

SEARCH_METRIC = "best_rob_acc"  # the searcher ranks a trial by its best epoch, as the tables do
OPTUNA_FILE = "optuna.db"  # the Optuna study of an optuna search, beside its Parquet tables


def study_url(folder: Path) -> str:
    """The study's sqlite URL in `folder` (absolute, as sqlite needs it)."""
    return f"sqlite:///{(folder / OPTUNA_FILE).resolve()}"


class FolderStudyStorage(RDBStorage):
    """`optuna.db` in the search folder, wherever that folder is now.

    Pickled with its file name alone. Unpickled inside a running search (`Tuner.restore`, and
    Ray restoring the searcher's state) it opens that search's file; outside one (a user's
    `Tuner.restore(...).get_results()`) it stays closed, as reading results needs no study.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(study_url(folder))

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "url": OPTUNA_FILE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        try:
            folder = current().folder
        except RuntimeError:
            self.__dict__.update(state)  # not opened: no search runs in this process
            return
        super().__setstate__({**state, "url": study_url(folder)})


class FolderOptunaSearch(OptunaSearch):
    """Ray's Optuna searcher, for a study that outlives Ray's snapshots of it.

    The study is a file (`FolderStudyStorage`), written the moment a trial is told; Ray saves
    the searcher's own record of finished trials only now and then. A search killed between
    the two resumes with the study ahead: Ray replays the trial's last results, and Optuna
    refuses to update a finished trial (`UpdateFinishedTrialError`), which stopped the resume.
    A trial the study has finished already is taken as finished here too, and its replayed
    results (the same records) are not told twice. Nor are the epochs a resumed trial reports
    again from its checkpoint (`resume.py`) that the study holds already: Optuna would ignore
    them with a warning on the user's terminal.
    """

    def _record(self, trial_id: str) -> optuna.trial.FrozenTrial | None:
        """The study's record of a trial this searcher asked for (None where it has none): one
        read of the study per result, whatever is asked of it."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return None
        trials = self._ot_study.get_trials(deepcopy=False)
        return trials[ot_trial.number] if ot_trial.number < len(trials) else None

    def _finished_in_study(self, trial_id: str, record: optuna.trial.FrozenTrial | None) -> bool:
        if record is None or trial_id in self._completed_trials or not record.state.is_finished():
            return False
        self._completed_trials.add(trial_id)
        return True

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        record = self._record(trial_id)
        replayed = record is not None and result.get(TRAINING_ITERATION) in record.intermediate_values  # an epoch the study holds
        if not (self._finished_in_study(trial_id, record) or replayed):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if not self._finished_in_study(trial_id, self._record(trial_id)):
            super().on_trial_complete(trial_id, result, error)


def search_metrics(space: SearchSpace) -> list[str]:
    """The trial results Optuna optimises: each objective's figure at the best epoch.

    `best_<objective>` is what the trainable reports for the epoch the tables select (the
    whole split once the trial finished), so the study's values equal trials.parquet's.
    """
    return [f"best_{name}" for name in space.objectives] if space.objectives else [SEARCH_METRIC]


LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II sampler, picklable as Ray needs it to be.

    Ray pickles the searcher, and with it the sampler, into the search folder (`tuner.pkl`,
    the searcher's state) so that `--resume` can rebuild it. Optuna 5 gave the genetic
    samplers a `threading.Lock` (`BaseGASampler._thread_lock`), which no pickle can hold.
    The lock guards an in-process cache, so a pickle leaves it out and an unpickled sampler
    gets a new one. Any attribute a newer Optuna added since the pickle was written (a search
    started under Optuna 4, resumed under 5) takes the value a new sampler starts with.
    """

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not isinstance(v, LOCK_TYPES)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        fresh = optuna.samplers.NSGAIISampler(population_size=state.get("_population_size") or 50)
        self.__dict__.update({**fresh.__dict__, **state})


def optuna_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """TPE (single- and multi-objective), or NSGA-II with a quarter of the budget as its
    population (4 to Optuna's default 50), so a few generations fit the budget. Seeded."""
    if space.sampler == "nsga2":
        population = min(50, max(4, (space.trials or 1) // 4))
        return NSGAIISampler(population_size=population, seed=space.seed)
    return optuna.samplers.TPESampler(seed=space.seed)


def search_algorithm(space: SearchSpace, folder: Path) -> Any:
    """Optuna (TPE or NSGA-II, seeded) for strategy optuna; Ray's grid/variant generator otherwise.

    With `objectives` the study is multi-objective, each objective in its own direction
    (`pareto.OBJECTIVES`), and its Pareto front is the search's result; otherwise it
    maximises the best robust accuracy. With `stack` > 1 its trials train in stacks
    (`stacked_search.py`); `max_concurrent` then counts stacks.
    """
    if space.strategy != "optuna":
        return None
    from ray.tune.search import ConcurrencyLimiter

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metrics = search_metrics(space)
    metric: str | list[str]
    mode: str | list[str]
    if space.objectives:  # Ray's multi-objective form takes lists
        metric, mode = metrics, directions(space.objectives)
    else:  # a single metric stays a plain name
        metric, mode = metrics[0], "max"
    searcher: Any = FolderOptunaSearch(
        sampler=optuna_sampler(space), metric=metric, mode=mode, study_name=space.name,
        storage=FolderStudyStorage(folder),
    )  # fmt: skip
    if space.stack > 1:  # each Ray trial a stack; Optuna still asks for and is told of each member
        searcher = StackedSearch.for_budget(searcher, space.trials or 1, space.stack, space.seed)
    return (
        ConcurrencyLimiter(searcher, max_concurrent=space.max_concurrent)
        if space.max_concurrent
        else searcher
    )
