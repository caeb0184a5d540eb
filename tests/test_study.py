"""An optuna search's study storage: pickled by Ray with its file name alone, it reopens the
study in the folder of the search being run, wherever that folder moved."""

from __future__ import annotations

import pickle
import shutil

import optuna

from wartune.tune.running import RunningSearch, running
from wartune.tune.study import OPTUNA_FILE, FolderStudyStorage


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
