"""PBT as a strategy: an exploited trial continues from another trial's checkpoint with the
new λ in its config, and its controller trains with that λ (real Ray PBT, real Parquet)."""

import json

import pytest
import torch

from tests.conftest import kill_when, move_search, rows_of, write_space
from tests.test_cli import _run
from wartune.engine.config import TrainConfig
from wartune.engine.trainer import Trainer


def test_a_fixed_lambda_is_the_configs_when_restoring_another_runs_state(tmp_path):
    # PBT's exploit in the engine's terms: train at λ 3, restore that state into a λ 6 trainer.
    config = TrainConfig(model="cnn-4", lam=3.0, epochs=2, batch_size=256, threads=1, eval={"steps": 1, "max_examples": 30})
    donor = Trainer(config)
    donor.run_epoch()
    donor.save(tmp_path / "donor.pt")
    heir = Trainer(TrainConfig.model_validate({**config.model_dump(), "lam": 6.0}))
    heir.load(tmp_path / "donor.pt")
    assert heir.epoch == 1 and heir.controller.value == 6.0
    assert torch.equal(next(heir.model.parameters()), next(donor.model.parameters()))  # the donor's weights
    heir.fit()
    assert [r.lambda_last for r in heir.history] == [3.0, 6.0]  # the donor's epoch, then its own λ


def test_lr_and_weight_decay_are_the_configs_when_restoring_another_runs_state(tmp_path):
    # PBT over lr and weight decay: the heir keeps the donor's place in the schedule (epoch 3 of 4
    # under exp-decay halves the lr) but at its own base lr, and steps with its own weight decay.
    config = TrainConfig(model="cnn-4", lam=3.0, epochs=4, lr=0.1, weight_decay=5e-4, batch_size=256, threads=1,
                         eval={"steps": 1, "max_examples": 30})  # fmt: skip
    donor = Trainer(config)
    for _ in range(3):
        donor.run_epoch()
    donor.save(tmp_path / "donor.pt")
    heir = Trainer(TrainConfig.model_validate({**config.model_dump(), "lr": 0.02, "weight_decay": 1e-3}))
    heir.load(tmp_path / "donor.pt")
    group = heir.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], heir.scheduler.base_lrs) == (pytest.approx(0.01), 1e-3, [0.02])
    assert heir.scheduler.get_last_lr() == [pytest.approx(0.01)]
    # one SGD step by hand from the donor's weights w and momentum m, a zero gradient:
    # m' = μ·m + wd·w, w' = w − lr·m', with the heir's lr and weight decay
    params = list(heir.model.parameters())
    weights, momenta = [p.detach().clone() for p in params], [heir.optimizer.state[p]["momentum_buffer"].clone() for p in params]
    for p in params:
        p.grad = torch.zeros_like(p)
    heir.optimizer.step()
    for p, w, m in zip(params, weights, momenta, strict=True):
        torch.testing.assert_close(p.detach(), w - 0.01 * (config.momentum * m + 1e-3 * w))
    resumed = Trainer(config)  # the donor's own config: its lr and decay, as it left them
    resumed.load(tmp_path / "donor.pt")
    assert (resumed.optimizer.param_groups[0]["lr"], resumed.optimizer.param_groups[0]["weight_decay"]) == (0.05, 5e-4)
    resumed.fit()
    assert [r.lr for r in resumed.history] == [0.1, 0.1, 0.1, 0.05]


def test_pbt_moves_the_searched_dimensions_within_their_ranges_and_journals_them(tmp_path):
    from ray import tune
    from ray.tune.experiment import Trial

    from wartune.tune.dimensions import TUNED
    from wartune.tune.pbt import latest_exploits, population_based_training
    from wartune.tune.running import RunningSearch, running
    from wartune.tune.spaces import SearchSpace

    space = SearchSpace.model_validate({"strategy": "pbt", "model": "cnn-8", "trials": 2, "epochs": 4,
                                        "lambda": {"low": 1, "high": 12}, "pbt": {"interval": 1, "resample": 0.0},
                                        "search": {"lr": {"low": 0.01, "high": 0.2, "log": True}, "attack_steps": [3, 5, 10]}})  # fmt: skip
    pbt = population_based_training(space)
    assert set(pbt._hyperparam_mutations) == {"lam", TUNED} and pbt._hyperparam_mutations[TUNED]["attack_steps"] == [3, 5, 10]
    clip = pbt._custom_explore_fn
    assert clip({"lam": 5.0, TUNED: {"lr": 0.3, "attack_steps": 5}})[TUNED] == {"lr": 0.2, "attack_steps": 5}
    assert clip({"lam": 5.0, TUNED: {"lr": 0.004, "attack_steps": 5}})[TUNED]["lr"] == 0.01
    folder = tmp_path / "search"
    folder.mkdir()
    with running(RunningSearch(folder)):
        pbt._log_config = False
        weak = _stub_trial(folder / "ray", "t_00000", 2.0, {"lr": 0.05, "attack_steps": 3})
        strong = _stub_trial(folder / "ray", "t_00001", 5.0, {"lr": 0.1, "attack_steps": 5})
        for trial in (weak, strong):
            pbt.on_trial_add(_Controller(), trial)
            trial.set_status(Trial.PAUSED)
        state = pbt._trial_state[strong]
        state.last_checkpoint = tune.Checkpoint(str(folder / "ray" / "tune" / "t_00001" / "checkpoint_000001"))
        state.last_train_time, state.last_score = 2, 0.5
        state.last_result = {"epoch": 2, "val_rob_acc": 0.5, "training_iteration": 2}
        pbt._trial_state[weak].last_score = 0.1
        pbt._exploit(None, weak, strong)
        moved = weak.config[TUNED]
        # a trial's last epoch is left alone: no exploit there
        assert pbt.on_trial_result(_Controller([weak, strong]), weak, {"epoch": 4, "val_rob_acc": 0.0, "training_iteration": 4}) == "CONTINUE"
        assert len(latest_exploits(folder)) == 1
        assert moved["lr"] in (pytest.approx(0.08), pytest.approx(0.12)) and moved["attack_steps"] in (3, 10)  # × 0.8 / 1.2; a neighbour
        assert latest_exploits(folder)["t_00000"][TUNED] == moved
        stale = _stub_trial(folder / "ray", "t_00000", weak.config["lam"], {"lr": 0.05, "attack_steps": 3})
        population_based_training(space).on_trial_add(_Controller(), stale)  # a snapshot from before the exploit
    assert stale.config[TUNED] == moved and stale.checkpoint is not None


@pytest.mark.e2e
def test_pbt_moves_a_running_trials_lambda_and_the_trial_trains_with_it_across_a_kill_and_a_move(tmp_path, capsys):
    # Two trials, the bottom half exploits the top one after every epoch: three chances to move
    # λ and the lr beside it. Killed once both trained two epochs (Ray keeps no PBT state: the
    # resumed scheduler must sync again past them), moved to another parent and resumed there.
    space = write_space(tmp_path, strategy="pbt", model="cnn-8", trials=2, epochs=4,
                        pbt={"interval": 1, "quantile": 0.5, "resample": 0.0}, search={"lr": [0.05, 0.1, 0.2]},
                        **{"lambda": {"low": 0.5, "high": 12, "log": True}})  # fmt: skip
    out = tmp_path / "runs"
    kill_when(space, out, lambda trials: len(trials) == 2 and all(t["status"] == "running" and t["epochs"] >= 2 for t in trials))
    folder = move_search(out / "tiny", tmp_path / "elsewhere")
    recorded = rows_of(folder)
    code, _, err = _run(["search", "--space", str(space), "--out", str(folder.parent), "--no-mlflow", "--resume"], capsys)
    assert code == 0, err
    trials = rows_of(folder, "trials.parquet")
    assert len(trials) == 2 and {t["strategy"] for t in trials} == {"pbt"} and {t["status"] for t in trials} == {"finished"}
    epochs = rows_of(folder)
    assert all(e in epochs for e in recorded) and not (out / "tiny").exists()  # nothing lost, nothing at the old place
    moved = 0
    for t in trials:
        rows = sorted((e for e in epochs if e["trial_id"] == t["trial_id"]), key=lambda e: e["epoch"])
        assert [e["epoch"] for e in rows] == [1, 2, 3, 4]
        for e in rows:  # every epoch's every step trained with the λ the trial's config held then
            assert e["lambda_min"] == e["lambda_max"] == pytest.approx(e["lambda_setting"])
            assert 0.5 <= e["lambda_setting"] <= 12
        moved += len({e["lambda_setting"] for e in rows}) > 1
        # the trial's row: the λ and lr it ended with, those its last epoch trained with (exp-decay halves epoch 4's)
        assert t["lambda_final"] == pytest.approx(rows[-1]["lambda_last"]) == pytest.approx(t["lambda_setting"])
        assert t["lr"] in (0.05, 0.1, 0.2) and rows[-1]["lr"] == pytest.approx(t["lr"] / 2)
    assert moved >= 1  # the bottom half took the top trial's weights and a perturbed λ
    results = [json.loads(line) for path in (folder / "ray" / "tune").glob("*/result.json") for line in path.read_text().splitlines()]
    for r in results:  # Ray's own log agrees, result by result: each epoch trained with its config's λ and lr
        assert r["lambda_last"] == pytest.approx(r["config"]["lam"])
        assert r["lr"] == pytest.approx(r["config"]["tuned"]["lr"] * (0.5 if r["epoch"] == 4 else 1.0))
    for trial_folder in (folder / "ray" / "tune").iterdir():  # no checkpoint name written again after the resume
        held = [json.loads((c / "progress.json").read_text())["epoch"] for c in sorted(trial_folder.glob("checkpoint_*"))]
        assert held == sorted(held), trial_folder.name


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lambda": [1, 6]}, "strategy 'pbt' needs 'lambda' as {low, high, log}"),
        ({"scheduler": "asha"}, "its own scheduler"),
        ({"pbt": {"quantile": 0.7}}, "quantile"),
        ({"pbt": {"interval": 0}}, "interval"),
        ({"seeds": 2}, "one population per seed"),
        ({"model": ["cnn-4", "cnn-8"]}, "one model per search"),
    ],
)
def test_pbt_keys_are_checked(changes, message):
    from wartune.engine.config import validate
    from wartune.errors import ConfigError
    from wartune.tune.spaces import SearchSpace

    base = {"strategy": "pbt", "model": "cnn-8", "trials": 4, "lambda": {"low": 1, "high": 12}}
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        validate(SearchSpace, {**base, **changes}, source="s.yaml")


def test_pbt_scheduler_follows_the_space():
    from wartune.tune.pbt import population_based_training
    from wartune.tune.spaces import SearchSpace

    space = SearchSpace.model_validate({"strategy": "pbt", "model": "cnn-8", "trials": 4, "epochs": 10,
                                        "lambda": {"low": 1, "high": 12}, "pbt": {"quantile": 0.5}})  # fmt: skip
    pbt = population_based_training(space)
    assert (pbt._perturbation_interval, pbt._quantile_fraction, pbt._synch) == (2, 0.5, True)  # a quarter of 10 epochs
    assert (pbt._time_attr, pbt._metric, pbt._metric_op) == ("epoch", "val_rob_acc", 1.0)  # ranked on validation, maximised
    clip = pbt._custom_explore_fn
    assert clip({"lam": 30.0})["lam"] == 12 and clip({"lam": 0.2})["lam"] == 1 and clip({"lam": 5.0})["lam"] == 5


def _stub_trial(storage_path, trial_id, lam, tuned=None):
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    from wartune.tune.dimensions import TUNED

    storage = StorageContext(storage_path=str(storage_path), experiment_dir_name="tune", trial_dir_name=trial_id)
    config = {"lam": lam} | ({TUNED: tuned} if tuned else {})
    return Trial("adversarial_training_trial", config=config, trial_id=trial_id, storage=storage, stub=True)


class _Controller:
    """What PBT asks of Ray's controller: its search algorithm (none here), the trials, and
    which of them still run (a synchronous PBT's)."""

    def __init__(self, trials: list | None = None) -> None:
        self.trials = trials or []
        self.search_alg = None

    def get_trials(self) -> list:
        return list(self.trials)

    def get_live_trials(self) -> list:
        return [t for t in self.trials if not t.is_finished()]


def test_an_exploit_is_journaled_and_a_restored_trial_whose_snapshot_predates_it_gets_it_back(tmp_path):
    # The driver dies after an exploit and before Ray's next snapshot: the restored trial must
    # train with the exploit's λ from the donor's checkpoint, in the folder's new place too.
    from ray import tune
    from ray.tune.experiment import Trial

    from wartune.tune.pbt import EXPLOITS_FILE, latest_exploits, population_based_training
    from wartune.tune.running import RunningSearch, running
    from wartune.tune.spaces import SearchSpace

    space = SearchSpace.model_validate({"strategy": "pbt", "model": "cnn-8", "trials": 2, "epochs": 4,
                                        "lambda": {"low": 1, "high": 12}, "pbt": {"interval": 1, "resample": 0.0}})  # fmt: skip
    folder = tmp_path / "search"
    folder.mkdir()
    with running(RunningSearch(folder)):
        pbt = population_based_training(space)
        pbt._log_config = False  # Ray's own log of perturbations needs a Ray session
        weak, strong = _stub_trial(folder / "ray", "t_00000", 2.0), _stub_trial(folder / "ray", "t_00001", 5.0)
        for trial in (weak, strong):
            pbt.on_trial_add(_Controller(), trial)
            trial.set_status(Trial.PAUSED)
        donor = tune.Checkpoint(str(folder / "ray" / "tune" / "t_00001" / "checkpoint_000001"))
        state = pbt._trial_state[strong]
        state.last_checkpoint, state.last_train_time, state.last_score = donor, 2, 0.5
        pbt._trial_state[weak].last_score = 0.1
        state.last_result = {"epoch": 2, "val_rob_acc": 0.5, "training_iteration": 2, "steps": {"l_nat": [1.0]}}
        pbt._exploit(None, weak, strong)
    new_lam = weak.config["lam"]
    assert new_lam in (pytest.approx(4.0), pytest.approx(6.0))  # the donor's 5 × 0.8 or × 1.2
    exploit = latest_exploits(folder)["t_00000"]
    assert (exploit["lam"], exploit["epoch"], exploit["donor"], exploit["checkpoint"]) == (new_lam, 2, "t_00001", "t_00001/checkpoint_000001")
    assert exploit["metrics"] == {"epoch": 2, "val_rob_acc": 0.5, "training_iteration": 2}  # the scalars only
    with open(folder / EXPLOITS_FILE, "a") as journal:
        journal.write('{"trial": "t_00000", "lam"')  # a line cut short by a kill is skipped

    moved = tmp_path / "elsewhere" / "search"
    moved.parent.mkdir()
    folder.rename(moved)
    with running(RunningSearch(moved)):
        restored = population_based_training(space)
        stale, current = _stub_trial(moved / "ray", "t_00000", 2.0), _stub_trial(moved / "ray", "t_00001", 5.0)
        for trial in (stale, current):
            restored.on_trial_add(_Controller(), trial)
    assert stale.config["lam"] == new_lam and current.config["lam"] == 5.0  # the never-exploited one untouched
    assert stale.checkpoint.path == str(moved / "ray" / "tune" / "t_00001" / "checkpoint_000001")
    assert stale.run_metadata.checkpoint_manager.latest_checkpoint_result.metrics["training_iteration"] == 2
    assert current.checkpoint is None


def test_a_checkpoints_lineage_names_where_the_trials_own_epochs_begin(tmp_path):
    # After an exploit a trial's history starts with the donor's epochs: only later ones are its own.
    from ray import tune

    from wartune.tune.resume import checkpoint_epoch, lineage_from, write_progress

    own, donor = tmp_path / "t_00000", tmp_path / "t_00001"
    (own / "checkpoint_000003").mkdir(parents=True)
    (donor / "checkpoint_000001").mkdir(parents=True)
    (own / "checkpoint_000000").mkdir()
    write_progress(own / "checkpoint_000003", 3, lineage_from=2)
    write_progress(donor / "checkpoint_000001", 2, lineage_from=1)
    (own / "checkpoint_000000" / "progress.json").write_text('{"epoch": 1}')  # written by 0.2.0
    assert checkpoint_epoch(tune.Checkpoint(str(own / "checkpoint_000003"))) == 3
    assert lineage_from(tune.Checkpoint(str(own / "checkpoint_000003")), str(own)) == 2  # its own: the lineage it recorded
    assert lineage_from(tune.Checkpoint(str(donor / "checkpoint_000001")), str(own)) == 2  # a donor's: its epoch
    assert lineage_from(tune.Checkpoint(str(own / "checkpoint_000000")), str(own)) == 0


def _restored_population(tmp_path, epochs_at_the_kill: list[int]):
    """A synchronous PBT as a resumed search has it: Ray's snapshot gives the trials back, the
    scheduler starts over (no state kept), each trial trains on from its own checkpoint."""
    from ray.tune.experiment import Trial

    from wartune.tune.pbt import population_based_training
    from wartune.tune.spaces import SearchSpace

    space = SearchSpace.model_validate({"strategy": "pbt", "model": "cnn-8", "trials": len(epochs_at_the_kill), "epochs": 6,
                                        "lambda": {"low": 1, "high": 12}, "pbt": {"interval": 1, "resample": 0.0}})  # fmt: skip
    pbt = population_based_training(space)
    pbt._log_config = False
    trials = [_stub_trial(tmp_path / "ray", f"t_{i:05d}", 2.0 + i) for i in range(len(epochs_at_the_kill))]
    population = _Controller(trials)
    for trial in trials:
        pbt.on_trial_add(population, trial)
        trial.set_status(Trial.RUNNING)
    return pbt, population, trials


def _result(epoch: int, acc: float = 0.5) -> dict:
    return {"epoch": epoch, "val_rob_acc": acc, "training_iteration": epoch}


@pytest.mark.parametrize("last_epoch_reported_first", [False, True], ids=["behind-first", "last-first"])
def test_a_resumed_population_is_not_left_waiting_for_a_trial_that_finished(tmp_path, last_epoch_reported_first):
    # Killed with one trial ahead: on resume it trains its last epoch (6) while the other trains
    # on to its next sync (3). Whichever reports first, the one behind must not wait at
    # its sync for the finished trial (0.3.0 hung there: PAUSED, never chosen again), nor take
    # the finished trial's checkpoint from an epoch it has not reached.
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from wartune.tune.running import RunningSearch, running

    with running(RunningSearch(tmp_path)):
        pbt, population, (ahead, behind) = _restored_population(tmp_path, [5, 2])
        pbt._trial_state[ahead].last_score = 0.9  # the better one, had it ranked at a sync before
        if last_epoch_reported_first:
            assert pbt.on_trial_result(population, ahead, _result(6, acc=0.9)) == TrialScheduler.CONTINUE
            ahead.set_status(Trial.TERMINATED)
            decision = pbt.on_trial_result(population, behind, _result(3))
        else:
            decision = pbt.on_trial_result(population, behind, _result(3))
            if decision == TrialScheduler.PAUSE:
                behind.set_status(Trial.PAUSED)
            assert pbt.on_trial_result(population, ahead, _result(6, acc=0.9)) == TrialScheduler.CONTINUE
            ahead.set_status(Trial.TERMINATED)
    if decision == TrialScheduler.PAUSE:
        behind.set_status(Trial.PAUSED)
    assert behind.status == Trial.RUNNING or pbt.choose_trial_to_run(population) is behind  # it trains on
    assert behind.config["lam"] == 3.0  # nobody took the finished trial's epoch-6 checkpoint
    assert pbt._next_perturbation_sync == 4  # its next sync: an interval on, not the finished trial's epoch
