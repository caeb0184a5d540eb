"""Ray's pickled experiment state, edited without loading it: paths re-rooted where a search
folder moved, Ray's PBT swapped for wartune's, everything else as it was."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import ray.cloudpickle as cloudpickle
from ray.train._internal.storage import StorageContext
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.utils.serialization import TuneFunctionEncoder, _loads_with_cloudpickle

from wartune.tune.pbt import ResumablePBT
from wartune.tune.ray_pickles import edit, mend, stored_root


def _state(folder: Path) -> dict:
    """What Ray's search-algorithm state holds: the storage new trials are created in (the
    same object twice, so the second is a memo reference), and an Optuna URL of 0.1.0."""
    storage = StorageContext(str(folder / "ray"), "tune")
    return {"experiment": {"storage": storage}, "iterator": storage, "url": f"sqlite:///{folder}/optuna.db",
            "neighbour": f"{folder}-old/optuna.db"}  # fmt: skip


def test_a_moved_folders_state_is_rerooted_and_nothing_else_changes(tmp_path):
    old, new = tmp_path / "scratch" / "tiny", tmp_path / "project" / "tiny"
    experiment = new / "ray" / "tune"
    experiment.mkdir(parents=True)
    # a pickle, whatever its name says
    state = experiment / "search_gen_state-2026-11-30_00-00-00.json"
    state.write_bytes(cloudpickle.dumps(_state(old)))
    assert stored_root(state.read_bytes()) == str(old / "ray")

    # the experiment state: a trial's state as JSON text, holding a checkpoint another trial gave it
    # (PBT) as plain text and a storage as a hex-encoded pickle, the way Ray writes them
    taken = f"{old}/ray/tune/trial_b/checkpoint_000001"
    trial = json.dumps(
        {"restore_path": taken, "storage": StorageContext(str(old / "ray"), "tune")},
        cls=TuneFunctionEncoder,
    )
    experiment_state = experiment / "experiment_state-2026-11-30_00-00-00.json"
    experiment_state.write_text(
        json.dumps({"trial_data": [[trial, "{}"]], "runner_data": {"_iteration": 3}})
    )

    assert sorted(mend(experiment, new)) == sorted([state.name, experiment_state.name])
    [[trial_text, metadata]] = json.loads(experiment_state.read_text())["trial_data"]
    restored = _loads_with_cloudpickle(trial_text)
    assert (
        restored["restore_path"] == f"{new}/ray/tune/trial_b/checkpoint_000001" and metadata == "{}"
    )
    assert restored["storage"].storage_fs_path == str(new / "ray")
    loaded = pickle.loads(state.read_bytes())
    assert loaded["experiment"]["storage"].storage_fs_path == str(new / "ray")
    assert loaded["iterator"] is loaded["experiment"]["storage"]  # the memo kept its references
    assert loaded["url"] == f"sqlite:///{new}/optuna.db"  # a path inside a URL too
    # a sibling whose name starts alike is not the folder
    assert loaded["neighbour"] == f"{old}-old/optuna.db"
    assert mend(experiment, new) == []  # in place already: nothing is written


def test_ray_pbt_of_an_older_search_becomes_the_resumable_one(tmp_path):
    pbt = PopulationBasedTraining(time_attr="epoch", metric="rob_acc", mode="max", perturbation_interval=2,
                                  hyperparam_mutations={"lam": [1.0, 6.0]}, synch=True)  # fmt: skip
    for protocol in (2, 5):  # GLOBAL and STACK_GLOBAL
        loaded = pickle.loads(
            edit(cloudpickle.dumps({"scheduler": pbt, "again": pbt}, protocol=protocol))
        )
        assert type(loaded["scheduler"]) is ResumablePBT and loaded["again"] is loaded["scheduler"]
        assert (loaded["scheduler"]._perturbation_interval, loaded["scheduler"]._synch) == (2, True)


def test_a_torn_pickle_is_refused_and_left_to_ray(tmp_path):
    experiment = tmp_path / "tiny" / "ray" / "tune"
    experiment.mkdir(parents=True)
    data = cloudpickle.dumps(_state(tmp_path / "old"))
    torn = experiment / "basic-variant-state-2026-11-30_00-00-00.json"
    torn.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError):
        edit(torn.read_bytes())
    assert mend(experiment, tmp_path / "tiny") == [] and torn.read_bytes() == data[: len(data) // 2]
