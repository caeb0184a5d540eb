"""An optuna search's study storage and searcher: pickled by Ray (the storage with its file name
alone, reopening the study in the folder of the search being run; every sampler, NSGA-II
included), they resume where they stopped."""

from __future__ import annotations

import pickle
import shutil

import optuna
import pytest
import ray.cloudpickle as cloudpickle

from wartune.tune.ray_pickles import edit
from wartune.tune.running import RunningSearch, running
from wartune.tune.spaces import SearchSpace
from wartune.tune.strategies import param_space
from wartune.tune.study import (
    OPTUNA_FILE,
    SEARCH_METRIC,
    FolderStudyStorage,
    NSGAIISampler,
    search_algorithm,
    search_metrics,
)


def test_the_pickled_study_storage_reopens_in_the_folder_it_moved_to(tmp_path):
    old, new = tmp_path / "scratch" / "tiny", tmp_path / "project" / "tiny"
    old.mkdir(parents=True)
    study = optuna.create_study(study_name="tiny", storage=FolderStudyStorage(old))
    study.enqueue_trial({"lam": 6.0})
    pickled = pickle.dumps(study)  # as Ray pickles the searcher: the study with its storage
    assert str(old).encode() not in pickled
    new.parent.mkdir()
    shutil.move(old, new)

    with running(RunningSearch(new)):
        reopened = pickle.loads(pickled)
    assert reopened._storage._backend.url == f"sqlite:///{new / OPTUNA_FILE}"
    # the queued trial, from the file where it is now
    assert len(reopened.trials) == 1 and not old.exists()

    # a user's Tuner.restore(...).get_results(): no search runs, nothing is opened
    unbound = pickle.loads(pickled)
    assert unbound._storage._backend.url == OPTUNA_FILE and not hasattr(
        unbound._storage._backend, "engine"
    )


@pytest.mark.parametrize(
    ("sampler", "objectives"),
    [(None, None), (None, ["rob_acc", "nat_acc"]), ("nsga2", None), ("nsga2", ["rob_acc", "nat_acc"])],
)
def test_each_optuna_searcher_pickles_and_resumes_where_it_stopped(tmp_path, sampler, objectives):
    """Ray pickles the searcher (`tuner.pkl`, its saved state) to resume a search; Optuna 5's
    NSGA-II sampler holds a lock that no pickle can carry. Every sampler pickles, and the
    searcher restored from its saved state asks for the same next λ as the one that saved it."""
    from ray.tune.search import ConcurrencyLimiter, Searcher

    space = SearchSpace.model_validate(
        {"name": "tiny", "strategy": "optuna", "lambda": {"low": 0.5, "high": 24, "log": True},
         "trials": 8, "max_concurrent": 2, "sampler": sampler, "objectives": objectives, "seed": 0}
    )  # fmt: skip
    def searcher() -> Searcher:
        made = search_algorithm(space, tmp_path)
        assert isinstance(made, ConcurrencyLimiter)
        assert made.set_search_properties(None, None, param_space(space))
        return made

    with running(RunningSearch(tmp_path)):
        first = searcher()
        cloudpickle.dumps(first)  # as Tuner(...) writes tuner.pkl
        metrics = search_metrics(space)
        for i in range(6):  # past NSGA-II's first generation of 4
            lam = first.suggest(f"t{i}")["lam"]
            first.on_trial_complete(f"t{i}", {m: lam / 24 + 0.01 * k for k, m in enumerate(metrics)})
        first.save(str(tmp_path / "searcher.pkl"))
        restored = searcher()
        restored.restore(str(tmp_path / "searcher.pkl"))
        assert restored.suggest("t6") == first.suggest("t6")


def test_nsga2_sampler_of_an_older_optuna_gains_its_lock_when_adopted():
    """A search started under Optuna 4 pickled Optuna's own sampler without the lock Optuna 5
    added; `ray_pickles.edit` names wartune's class in its place, which restores the lock."""
    older = optuna.samplers.NSGAIISampler(population_size=4, seed=3)
    older.__dict__.pop("_thread_lock")  # as Optuna 4 pickled it
    loaded = pickle.loads(edit(cloudpickle.dumps(older)))
    assert type(loaded) is NSGAIISampler and loaded.population_size == 4
    with loaded._thread_lock:  # a working lock, not the one left behind
        pass


def test_a_study_ahead_of_rays_snapshot_takes_the_replayed_results_of_its_finished_trial(tmp_path):
    """Killed after the study was told a trial finished but before Ray saved the searcher:
    the resumed searcher gets the trial's last results again. They are not told twice, and
    Optuna's refusal to update a finished trial no longer stops the resume."""
    space = SearchSpace.model_validate(
        {"name": "tiny", "strategy": "optuna", "lambda": {"low": 0.5, "high": 24}, "trials": 4, "seed": 0}
    )
    result = {SEARCH_METRIC: 0.5, "training_iteration": 3}
    with running(RunningSearch(tmp_path)):
        first = search_algorithm(space, tmp_path)
        first.set_search_properties(None, None, param_space(space))
        first.suggest("t0")
        first.save(str(tmp_path / "snapshot.pkl"))  # Ray's last snapshot: t0 still running
        first.on_trial_complete("t0", result)  # the study file is told
        resumed = search_algorithm(space, tmp_path)
        resumed.set_search_properties(None, None, param_space(space))
        resumed.restore(str(tmp_path / "snapshot.pkl"))
        resumed.on_trial_result("t0", result)  # Ray replays the trial's last result
        resumed.on_trial_complete("t0", result)
        assert resumed.suggest("t1") is not None  # the search goes on
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / OPTUNA_FILE}")
    assert [(t.state, t.value) for t in study.trials if t.state.is_finished()] == [(optuna.trial.TrialState.COMPLETE, 0.5)]


def test_an_epoch_a_resumed_trial_reports_again_is_not_told_twice_nor_warned_about(tmp_path):
    """A resumed trial reports again the epochs after Ray's registered checkpoint (resume.py);
    the study holds them already, and Optuna would ignore each with a warning on the terminal."""
    import warnings

    space = SearchSpace.model_validate(
        {"name": "tiny", "strategy": "optuna", "lambda": {"low": 0.5, "high": 24}, "trials": 4, "seed": 0}
    )
    with running(RunningSearch(tmp_path)):
        searcher = search_algorithm(space, tmp_path)
        searcher.set_search_properties(None, None, param_space(space))
        searcher.suggest("t0")
        searcher.on_trial_result("t0", {SEARCH_METRIC: 0.25, "training_iteration": 1})
        searcher.on_trial_result("t0", {SEARCH_METRIC: 0.5, "training_iteration": 2})
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Optuna's "already reported" warning fails the test
            searcher.on_trial_result("t0", {SEARCH_METRIC: 0.5, "training_iteration": 2})  # the replayed epoch
        searcher.on_trial_result("t0", {SEARCH_METRIC: 0.75, "training_iteration": 3})  # then training goes on
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / OPTUNA_FILE}")
    assert study.trials[0].intermediate_values == {1: 0.25, 2: 0.5, 3: 0.75}
